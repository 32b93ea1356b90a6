"""Exploration and the control group: configuration, exact epsilon-greedy probabilities,
Thompson sampling's Monte Carlo estimate, control-group hashing, stages and reason codes."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from features.schema import FeatureSchema
from nba_service.engine import explore_kernels
from nba_service.engine.arbitration import Engine, Ranking
from nba_service.engine.catalog import CatalogError, parse_catalog
from nba_service.engine.explore import Selection, in_control_group, select
from nba_service.engine.explore_config import (
    ControlTreatment,
    ExplorationPolicy,
    Method,
    Period,
    control_bucket,
    parse_exploration,
    period_key,
)
from nba_service.engine.reasons import Stage

SCHEMA = FeatureSchema.from_dict({"features": [{"name": "age", "dtype": "int"}]})
T = {"default": {"title": "t", "text": "x"}}


def _engine(n: int = 5, groups: list[str] | None = None, max_per_group: int = 0,
            mandatory: tuple[int, ...] = ()) -> Engine:
    groups = groups or ["g"] * n
    actions: list[dict[str, Any]] = [
        {"id": f"a{i}", "type": "offer", "group": groups[i], "channels": ["WEB"],
         "value": 1, "treatments": T, "mandatory": i in mandatory}
        for i in range(n)
    ]
    actions.append({"id": "fb", "type": "info", "group": "info", "channels": ["WEB"],
                    "value": 0, "treatments": T, "fallback": True})
    doc = {"channels": {"WEB": {"fallback": ["fb"]}},
           "arbitration": {"max_per_group": max_per_group}, "actions": actions}
    return Engine(parse_catalog(doc, SCHEMA), SCHEMA)


def _rank(eng: Engine, props: list[float], limit: int) -> Ranking:
    cands = np.arange(len(props), dtype=np.int64)  # without the fallback action
    row = np.zeros(len(SCHEMA.features), dtype=np.float32)
    return eng.rank(row, cands, np.array(props), "WEB", {}, limit)


def _select(eng: Engine, r: Ranking, limit: int, policy: ExplorationPolicy, seed: int = 0,
            control: ControlTreatment | None = None,
            rng: np.random.Generator | None = None) -> Selection:
    return select(r, limit, policy, action_groups=eng.action_groups, n_groups=eng.n_groups,
                  max_per_group=eng.max_per_group,
                  rng=rng if rng is not None else np.random.default_rng(seed), control=control)


def _ids(sel: Selection) -> tuple[int, ...]:
    return tuple(int(a) for a in sel.ranking.served_actions)


# ---------------------------------------------------------------- configuration

def test_overrides_inherit_the_default_and_the_most_specific_match_wins() -> None:
    cfg = parse_exploration({
        "default": {"method": "epsilon_greedy", "epsilon": 0.2},
        "control_group": {"period": "week", "treatment": "none", "salt": "s"},
        "overrides": [
            {"channel": "WEB", "method": "thompson", "prior_strength": 40},
            {"placement": "hero", "epsilon": 0.5},
            {"channel": "WEB", "placement": "hero", "method": "greedy"},
            {"channel": "EMAIL", "control_share": 0.1},
        ],
    })
    assert cfg.policy_for("WEB", "hero").method is Method.GREEDY
    assert cfg.policy_for("WEB", "sidebar") == ExplorationPolicy(
        Method.THOMPSON, epsilon=0.2, prior_strength=40.0)
    assert cfg.policy_for("MOBILE_APP", "hero") == ExplorationPolicy(
        Method.EPSILON_GREEDY, epsilon=0.5)
    assert cfg.policy_for("EMAIL", None).control_share == 0.1
    assert cfg.policy_for("SMS", None) == cfg.default
    assert cfg.control.period is Period.WEEK and cfg.control.treatment is ControlTreatment.NONE
    none = parse_exploration(None)
    assert none.policy_for("WEB", "hero").method is Method.GREEDY
    assert none.default.control_share == 0.0


@pytest.mark.parametrize(("raw", "message"), [
    ({"default": {"method": "softmax"}}, "field 'method'"),
    ({"default": {"epsilon": 1.5}}, "field 'epsilon'"),
    ({"default": {"control_share": -0.1}}, "field 'control_share'"),
    ({"default": {"draws": 3}}, "field 'draws'"),
    ({"default": {"method": "thompson", "prior_strength": 0}}, "field 'prior_strength'"),
    ({"default": {"colour": 1}}, "field 'default'"),
    ({"overrides": [{"method": "greedy"}]}, "needs a channel and/or a placement"),
    ({"overrides": [{"channel": "FAX"}]}, "unknown channel 'FAX'"),
    ({"overrides": [{"channel": "WEB"}, {"channel": "WEB"}]}, "overrides[1]: duplicate"),
    ({"control_group": {"period": "fortnight"}}, "control_group.period"),
    ({"control_group": {"treatment": "holdout"}}, "control_group.treatment"),
    ({"bandit": {}}, "allowed fields"),
])
def test_bad_exploration_config_names_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(CatalogError, match="exploration") as exc:
        parse_exploration(raw)
    assert message in str(exc.value)


def test_the_catalog_carries_its_exploration_block() -> None:
    doc = {"channels": {"WEB": {"fallback": ["fb"]}},
           "exploration": {"overrides": [{"channel": "WEB", "method": "thompson"}]},
           "actions": [{"id": "fb", "type": "info", "group": "info", "channels": ["WEB"],
                        "treatments": T, "fallback": True}]}
    assert parse_catalog(doc, SCHEMA).exploration.policy_for("WEB", None).method \
        is Method.THOMPSON
    doc["exploration"] = {"default": {"method": "ucb"}}
    with pytest.raises(CatalogError, match="exploration: default: field 'method'"):
        parse_catalog(doc, SCHEMA)


# ---------------------------------------------------------------- control group

def _ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def test_period_keys() -> None:
    t = _ts(2025, 3, 31, 23, 59)
    assert period_key(Period.DAY, t) == "2025-03-31"
    assert period_key(Period.WEEK, t) == "2025-W14"
    assert period_key(Period.MONTH, t) == "2025-03"
    assert period_key(Period.QUARTER, t) == "2025-Q1"
    assert period_key(Period.YEAR, t) == "2025"
    assert period_key(Period.FIXED, t) == ""
    assert period_key(Period.MONTH, _ts(2025, 4, 1)) == "2025-04"


def test_control_group_is_stable_per_period_sized_by_share_and_nested() -> None:
    cfg = parse_exploration({"control_group": {"period": "month", "salt": "x"}})
    ten = ExplorationPolicy(control_share=0.10)
    five = ExplorationPolicy(control_share=0.05)
    ids = [f"cust-{i}" for i in range(20_000)]
    march, march_later, april = _ts(2025, 3, 2), _ts(2025, 3, 30), _ts(2025, 4, 2)
    in_ten = {c for c in ids if in_control_group(cfg, ten, c, march)}
    in_five = {c for c in ids if in_control_group(cfg, five, c, march)}
    # Binomial(20000, 0.1): sd 42; 5 sd either side.
    assert abs(len(in_ten) - 2000) < 5 * 42
    assert abs(len(in_five) - 1000) < 5 * 31
    assert in_five <= in_ten
    assert in_ten == {c for c in ids if in_control_group(cfg, ten, c, march_later)}
    rotated = {c for c in ids if in_control_group(cfg, ten, c, april)}
    # A new month draws a new group: the overlap is what independence predicts (10% of it).
    assert abs(len(in_ten & rotated) - 200) < 5 * 14
    assert not any(in_control_group(cfg, ExplorationPolicy(), c, march) for c in ids[:500])
    assert control_bucket("c1", "2025-03", "a") != control_bucket("c1", "2025-03", "b")


# ---------------------------------------------------------------- epsilon-greedy

def _slot_reference(props: list[float], groups: list[int], max_per_group: int, eps: float,
                    chosen: tuple[int, ...]) -> dict[tuple[int, ...], float]:
    """Exact probability of every slate of len(k) by enumeration (greedy order = props desc)."""
    order = sorted(range(len(props)), key=lambda i: (-props[i], i))

    def rec(prefix: tuple[int, ...], p: float, k: int, out: dict[tuple[int, ...], float]) -> None:
        counts: dict[int, int] = {}
        for a in prefix:
            counts[groups[a]] = counts.get(groups[a], 0) + 1
        adm = [a for a in order if a not in prefix
               and (max_per_group == 0 or counts.get(groups[a], 0) < max_per_group)]
        if k == 0 or not adm:
            out[prefix] = out.get(prefix, 0.0) + p
            return
        for a in adm:
            q = eps / len(adm) + (1 - eps if a == adm[0] else 0.0)
            rec((*prefix, a), p * q, k - 1, out)

    out: dict[tuple[int, ...], float] = {}
    rec((), 1.0, len(chosen), out)
    return out


def test_epsilon_greedy_probabilities_are_exact_and_match_the_frequencies() -> None:
    props = [0.9, 0.7, 0.5, 0.3, 0.2, 0.1]
    groups = ["x", "x", "y", "x", "y", "z"]
    eng = _engine(6, groups, max_per_group=2)
    r = _rank(eng, props, 3)
    policy = ExplorationPolicy(Method.EPSILON_GREEDY, epsilon=0.3)
    codes = [int(c) for c in eng.action_groups[:6]]
    ref = _slot_reference(props, codes, 2, 0.3, (0, 0, 0))
    assert math.isclose(sum(ref.values()), 1.0)
    rng = np.random.default_rng(7)
    counts: dict[tuple[int, ...], int] = {}
    n = 20_000
    for _ in range(n):
        sel = _select(eng, r, 3, policy, rng=rng)
        slate = _ids(sel)
        counts[slate] = counts.get(slate, 0) + 1
        if len(counts) < 40 or _ % 500 == 0:
            # The recorded per-rank probabilities multiply to the exact slate probability.
            assert math.isclose(float(np.prod(sel.probability)), ref[slate], rel_tol=1e-12)
            assert sel.explored == (slate != (0, 1, 2))
    assert set(counts) <= set(ref)
    for slate, p in ref.items():
        sd = math.sqrt(p * (1 - p) / n)
        assert abs(counts.get(slate, 0) / n - p) < 5 * sd + 1e-4, slate


def test_epsilon_greedy_respects_group_limits_and_stages() -> None:
    eng = _engine(4, ["x", "x", "x", "y"], max_per_group=1)
    r = _rank(eng, [0.9, 0.8, 0.7, 0.1], 2)
    assert list(r.served_actions) == [0, 3]
    for seed in range(200):
        sel = _select(eng, r, 2, ExplorationPolicy(Method.EPSILON_GREEDY, epsilon=1.0), seed)
        served = _ids(sel)
        assert len(served) == 2 and 3 in served  # one x at most, so y is always served
        stage = sel.ranking.removed_stage
        assert all(stage[i] == Stage.SERVED for i in served)
        for i in set(range(4)) - set(served):
            assert stage[i] in (Stage.GROUP_LIMIT, Stage.RANK_CUTOFF)
        # Uniform with eps = 1: slot 1 picks among 4, slot 2 among the admissible rest.
        assert sel.probability[0] == pytest.approx(0.25)
        assert sel.probability[1] == pytest.approx(1.0 if served[0] != 3 else 1 / 3)


def test_greedy_keeps_the_kernel_ranking_with_probability_one() -> None:
    eng = _engine(5)
    r = _rank(eng, [0.1, 0.5, 0.3, 0.9, 0.2], 3)
    sel = _select(eng, r, 3, ExplorationPolicy())
    assert sel.ranking is r
    assert _ids(sel) == (3, 1, 2)
    assert list(sel.probability) == [1.0, 1.0, 1.0]
    assert not sel.explored and not sel.control_group
    assert sel.reason_codes(0) == ["ELIGIBLE", "TOP_PRIORITY"]


def test_mandatory_actions_are_served_first_and_never_explored() -> None:
    eng = _engine(5, mandatory=(4,))
    r = _rank(eng, [0.9, 0.8, 0.7, 0.6, 0.01], 3)
    for seed in range(50):
        for policy in (ExplorationPolicy(Method.EPSILON_GREEDY, epsilon=1.0),
                       ExplorationPolicy(Method.THOMPSON, prior_strength=2.0, draws=64)):
            sel = _select(eng, r, 3, policy, seed)
            assert _ids(sel)[0] == 4 and sel.probability[0] == 1.0
            assert sel.reason_codes(0) == ["ELIGIBLE", "MANDATORY"]
            assert len(_ids(sel)) == 3 and not sel.explored_slots[0]


# ---------------------------------------------------------------- Thompson sampling

def _thompson_reference(props: np.ndarray, n: float, draws: int, seed: int) -> np.ndarray:
    """P(each action ranks first) by a large independent Monte Carlo with numpy's beta."""
    rng = np.random.default_rng(seed)
    theta = rng.beta(1 + props * n, 1 + (1 - props) * n, size=(draws, len(props)))
    return np.bincount(theta.argmax(axis=1), minlength=len(props)) / draws


def test_thompson_first_rank_probability_matches_an_independent_estimate() -> None:
    props = np.array([0.30, 0.27, 0.22, 0.10, 0.05])
    eng = _engine(5)
    r = _rank(eng, list(props), 1)
    ref = _thompson_reference(props, 30.0, 400_000, seed=1)
    draws = 400
    policy = ExplorationPolicy(Method.THOMPSON, prior_strength=30.0, draws=draws)
    rng = np.random.default_rng(3)
    seen: dict[int, list[float]] = {}
    n = 3000
    for _ in range(n):
        sel = _select(eng, r, 1, policy, rng=rng)
        seen.setdefault(_ids(sel)[0], []).append(float(sel.probability[0]))
    for a, estimates in seen.items():
        p = ref[a]
        # Each estimate is (1 + Binomial(D, p)) / (D + 1): error sd sqrt(p (1 - p) / D).
        sd = math.sqrt(p * (1 - p) / draws)
        assert abs(float(np.mean(estimates)) - p) < 4 * sd / math.sqrt(len(estimates)) + \
            1.5 / (draws + 1), a
        assert min(estimates) >= 1 / (draws + 1)
        # The action is served as often as its probability says.
        assert abs(len(estimates) / n - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-3, a


def test_thompson_slate_probabilities_multiply_to_the_slate_share() -> None:
    eng = _engine(4)
    r = _rank(eng, [0.4, 0.35, 0.3, 0.05], 2)
    policy = ExplorationPolicy(Method.THOMPSON, prior_strength=10.0, draws=2000)
    sel = _select(eng, r, 2, policy, seed=5)
    slate = _ids(sel)
    rng = np.random.default_rng(11)
    props = np.array([0.4, 0.35, 0.3, 0.05])
    theta = rng.beta(1 + props * 10, 1 + (1 - props) * 10, size=(200_000, 4))
    top2 = np.argsort(-theta, axis=1)[:, :2]
    share = float(np.mean((top2[:, 0] == slate[0]) & (top2[:, 1] == slate[1])))
    assert float(np.prod(sel.probability)) == pytest.approx(share, abs=4 * math.sqrt(
        share * (1 - share) / 2000) + 1 / 2001)


def test_thompson_with_strong_evidence_is_greedy_and_seeded_runs_repeat() -> None:
    eng = _engine(4)
    r = _rank(eng, [0.9, 0.5, 0.2, 0.1], 2)
    strong = ExplorationPolicy(Method.THOMPSON, prior_strength=1e6, draws=64)
    sel = _select(eng, r, 2, strong, seed=1)
    assert _ids(sel) == (0, 1) and list(sel.probability) == [1.0, 1.0]
    assert not sel.explored and sel.reason_codes(0) == ["ELIGIBLE", "TOP_PRIORITY"]
    weak = ExplorationPolicy(Method.THOMPSON, prior_strength=1.0, draws=64)
    runs = [[(_ids(s), tuple(s.probability)) for s in
             (_select(eng, r, 2, weak, rng=rng) for _ in range(30))]
            for rng in (np.random.default_rng(9), np.random.default_rng(9))]
    assert runs[0] == runs[1]
    explored = [_select(eng, r, 2, weak, seed) for seed in range(60)]
    assert any(s.explored for s in explored)
    for s in explored:
        for j in range(2):
            expected = "EXPLORATION" if s.explored_slots[j] else "TOP_PRIORITY"
            assert s.reason_codes(j) == ["ELIGIBLE", expected]


# ---------------------------------------------------------------- control group selection

def test_control_group_random_slate_and_no_action() -> None:
    eng = _engine(5, mandatory=(4,))
    r = _rank(eng, [0.9, 0.8, 0.7, 0.6, 0.5], 3)
    sel = _select(eng, r, 3, ExplorationPolicy(), seed=2, control=ControlTreatment.RANDOM)
    assert sel.control_group and not sel.explored
    assert _ids(sel)[0] == 4
    assert list(sel.probability) == pytest.approx([1.0, 1 / 4, 1 / 3])
    assert sel.reason_codes(1) == ["ELIGIBLE", "CONTROL_GROUP"]
    stage = sel.ranking.removed_stage
    assert sorted(int(s) for s in stage) == [0, 0, 0, Stage.CONTROL_GROUP, Stage.CONTROL_GROUP]
    seen = {_ids(_select(eng, r, 3, ExplorationPolicy(), seed=s,
                         control=ControlTreatment.RANDOM))[1] for s in range(100)}
    assert seen == {0, 1, 2, 3}
    none = _select(eng, r, 3, ExplorationPolicy(), control=ControlTreatment.NONE)
    assert _ids(none) == (4,) and none.control_group
    assert [int(s) for s in none.ranking.removed_stage[:4]] == [Stage.CONTROL_GROUP] * 4
    assert none.ranking.removed_by(0) == "CONTROL_GROUP"


def test_exploration_kernels_never_compile_at_request_time() -> None:
    explore_kernels.warm_up()
    before = explore_kernels.compiled_specialisations()
    eng = _engine(6, ["a", "b", "a", "b", "c", "c"], max_per_group=1)
    r = _rank(eng, [0.5, 0.4, 0.3, 0.2, 0.1, 0.05], 4)
    for policy in (ExplorationPolicy(Method.EPSILON_GREEDY, epsilon=0.5),
                   ExplorationPolicy(Method.THOMPSON, draws=16)):
        _select(eng, r, 4, policy)
    _select(eng, r, 4, ExplorationPolicy(), control=ControlTreatment.RANDOM)
    assert explore_kernels.compiled_specialisations() == before == 2
