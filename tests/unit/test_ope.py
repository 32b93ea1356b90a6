"""Off-policy estimators: exact values on hand-made logs, interval coverage on synthetic
bandits with a known truth, diagnostics and warnings, and coverage on the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from features.schema import FeatureSchema
from nba_service.engine.catalog import Catalog, load_catalog
from tests.conftest import EXAMPLES
from training.bandit_dataset import simulate_logged
from training.dataset import simulate_impressions
from training.evaluate import booster_predict, evaluate_model
from training.ope import evaluate_policy, greedy_policy, weight_diagnostics
from training.simulate import Simulator
from training.train import train_propensity_model


@pytest.fixture(scope="module")
def demo_catalog(demo_schema: FeatureSchema) -> Catalog:
    return load_catalog(EXAMPLES / "catalog.yaml", demo_schema)


def test_estimators_on_a_hand_computed_log() -> None:
    # 4 decisions, 2 actions; the new policy always serves action 1.
    reward = np.array([1.0, 0.0, 2.0, 0.0])
    action = np.array([1, 0, 1, 1])
    pscore = np.array([0.5, 0.5, 0.25, 0.5])
    pi = np.tile([0.0, 1.0], (4, 1))
    q_hat = np.array([[0.1, 0.5], [0.2, 0.4], [0.3, 1.0], [0.0, 0.2]])
    res = evaluate_policy(reward, action, pscore, pi, q_hat, n_bootstrap=50, seed=1)
    w = np.array([2.0, 0.0, 4.0, 2.0])
    assert res.estimates["ips"].value == pytest.approx(np.mean(w * reward))  # 2.5
    assert res.estimates["snips"].value == pytest.approx((w * reward).sum() / w.sum())
    dm = np.array([0.5, 0.4, 1.0, 0.2])
    assert res.estimates["dm"].value == pytest.approx(dm.mean())
    dr = dm + w * (reward - q_hat[np.arange(4), action])
    assert res.estimates["dr"].value == pytest.approx(dr.mean())
    assert res.logged.value == pytest.approx(0.75)
    assert res.diagnostics.ess == pytest.approx(w.sum() ** 2 / (w**2).sum())
    assert res.diagnostics.matched == 3
    for est in res.estimates.values():
        assert est.lower <= est.upper


def test_dr_with_a_perfect_reward_model_has_no_variance() -> None:
    rng = np.random.default_rng(0)
    n, a = 500, 4
    q = rng.random((n, a))
    action = rng.integers(0, a, n)
    reward = q[np.arange(n), action]  # deterministic rewards equal to the model
    pi = greedy_policy(q)
    res = evaluate_policy(reward, action, np.full(n, 1 / a), pi, q, n_bootstrap=100)
    truth = q.max(axis=1).mean()
    assert res.estimates["dr"].value == pytest.approx(truth)
    assert res.estimates["dm"].value == pytest.approx(truth)
    assert res.estimates["dr"].upper - res.estimates["dr"].lower < 0.06
    assert res.estimates["ips"].upper - res.estimates["ips"].lower > 0.06


def _synthetic(seed: int, n: int = 3000, a: int = 5) -> tuple[dict[str, np.ndarray], float]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    coef = np.array([[1.0, -0.5, 0.2], [-1.0, 0.5, 0.0], [0.3, 0.3, 0.3], [0.0, -1.0, 1.0],
                     [0.5, 0.0, -0.8]])[:a]
    p = 1 / (1 + np.exp(-(x @ coef.T - 1.0)))
    logits = x @ rng.normal(scale=0.5, size=(3, a))
    mu = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # non-uniform logging
    action = np.array([rng.choice(a, p=row) for row in mu])
    reward = (rng.random(n) < p[np.arange(n), action]).astype(float)
    q_hat = np.clip(p + rng.normal(scale=0.05, size=p.shape), 0, 1)  # an imperfect model
    pi = 0.9 * greedy_policy(q_hat) + 0.1 / a
    truth = float((pi * p).sum(axis=1).mean())
    return {"reward": reward, "action": action, "pscore": mu[np.arange(n), action], "pi": pi,
            "q_hat": q_hat}, truth


def test_intervals_cover_the_truth_at_about_the_nominal_rate() -> None:
    reps = 60
    covered = {"ips": 0, "snips": 0, "dr": 0}
    for seed in range(reps):
        inputs, truth = _synthetic(seed)
        res = evaluate_policy(**inputs, n_bootstrap=200, seed=seed)
        for k in covered:
            covered[k] += res.estimates[k].covers(truth)
    # 95 % intervals: 60 reps cover >= 52 times unless the intervals are badly too narrow
    # (binomial(60, 0.95) falls below 52 with probability < 1 %).
    for k, c in covered.items():
        assert c >= 52, f"{k} covered the truth in {c} of {reps} replications"


def test_warnings_for_tiny_propensities_and_small_effective_sample() -> None:
    n = 1000
    pscore = np.full(n, 0.5)
    pscore[:5] = 0.001
    target = np.zeros(n)
    target[:5] = 1.0  # the new policy only agrees with the log on the improbable rows
    d = weight_diagnostics(pscore, target)
    assert d.min_propensity == pytest.approx(0.001)
    assert d.ess == pytest.approx(5.0)
    joined = " ".join(d.warnings)
    assert "effective sample size" in joined
    assert "propensity < 0.01" in joined
    assert "of the total importance weight" in joined

    healthy = weight_diagnostics(np.full(n, 0.5), np.full(n, 0.5))
    assert healthy.warnings == [] and healthy.ess == pytest.approx(n)

    none = weight_diagnostics(np.full(n, 0.5), np.zeros(n))
    assert any("never takes the logged action" in w for w in none.warnings)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pscore": np.array([0.5, 0.0])}, "pscore must be in"),
        ({"pscore": np.array([0.5, 1.5])}, "pscore must be in"),
        ({"action": np.array([0, 7])}, "action indices"),
        ({"reward": np.array([1.0, np.nan])}, "non-finite"),
        ({"pi": np.array([[0.8, 0.8], [0.5, 0.5]])}, "sum to <= 1"),
        ({"q_hat": np.zeros((2, 3))}, "q_hat has shape"),
    ],
)
def test_bad_inputs_are_rejected_with_the_reason(change: dict[str, np.ndarray],
                                                 message: str) -> None:
    inputs = {"reward": np.array([1.0, 0.0]), "action": np.array([0, 1]),
              "pscore": np.array([0.5, 0.5]), "pi": np.array([[1.0, 0.0], [0.0, 1.0]]),
              "q_hat": np.zeros((2, 2))}
    inputs.update(change)
    with pytest.raises(ValueError, match=message):
        evaluate_policy(**inputs, n_bootstrap=20)


def test_greedy_policy_respects_the_allowed_mask_and_serves_nothing_without_options() -> None:
    scores = np.array([[0.1, 0.9, 0.5], [0.3, np.nan, 0.2], [0.4, 0.8, 0.9]])
    allowed = np.array([[True, False, True], [True, True, True], [False, False, False]])
    pi = greedy_policy(scores, allowed)
    assert pi.tolist() == [[0, 0, 1], [1, 0, 0], [0, 0, 0]]


@pytest.mark.slow
def test_ope_intervals_cover_the_simulators_true_policy_value(
    demo_schema: FeatureSchema, demo_catalog: Catalog,
) -> None:
    """The engine serving a trained model, evaluated on uniformly logged simulator traffic:
    the truth is exact (true propensities x the engine's values on the logged contexts)."""
    sim = Simulator(demo_schema, demo_catalog, seed=5)
    channels = ["WEB", "MOBILE_APP", "CALL_CENTRE", "BRANCH"]
    train = simulate_impressions(sim, 4000, 3, channels, seed=1)
    model = train_propensity_model(train, demo_schema, params={"learning_rate": 0.1,
                                                               "num_leaves": 15},
                                   num_boost_round=150, log_every=0)
    predict = booster_predict(model.booster)
    reps = 4
    covered = {"ips": 0, "snips": 0, "dr": 0}
    for rep in range(reps):
        data, visits = simulate_logged(sim, 25_000, channels, seed=100 + rep,
                                       start_customer=100_000 + rep * 30_000)
        ev = evaluate_model(data, predict, demo_schema, demo_catalog, n_bootstrap=300,
                            seed=rep)
        assert ev.ope is not None and ev.scores is not None and ev.pi is not None
        p_true = sim.true_propensity_matrix(visits.take(ev.rows), channel=data.channel[ev.rows])
        truth = float((ev.pi * p_true * ev.scores.value).sum(axis=1).mean())
        for k in covered:
            covered[k] += ev.ope.estimates[k].covers(truth)
        # Informative, not just wide: the new policy is clearly better than the logging one.
        assert ev.ope.estimates["dr"].lower > ev.ope.logged.upper
        assert ev.ope.diagnostics.ess > 500
    for k, c in covered.items():
        assert c >= reps - 1, f"{k} covered the true value in {c} of {reps} replications"
