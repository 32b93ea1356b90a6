"""The simulator's ground truth: realistic customers and a response model with known effects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features.schema import FeatureSchema, Source
from nba_service.engine.catalog import Catalog, load_catalog
from training.simulate import FATIGUE, Simulator, Table, oracle_policy, random_policy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema.from_yaml(EXAMPLES / "features.yaml")


@pytest.fixture(scope="module")
def catalog(schema: FeatureSchema) -> Catalog:
    return load_catalog(EXAMPLES / "catalog.yaml", schema)


@pytest.fixture(scope="module")
def sim(schema: FeatureSchema, catalog: Catalog) -> Simulator:
    return Simulator(schema, catalog, seed=11)


@pytest.fixture(scope="module")
def pop(sim: Simulator) -> Table:
    return sim.population(4000)


def test_customers_have_every_batch_feature_with_plausible_values(
    sim: Simulator, schema: FeatureSchema
) -> None:
    people = sim.customers(2000)
    batch = [s.name for s in schema.of(Source.BATCH)]
    assert all(list(p) == ["customer_id", *batch] for p in people)
    ages = np.array([p["age"] for p in people])
    assert ages.min() >= 18 and ages.max() <= 90
    scores = np.array([p["credit_score"] for p in people], dtype=np.float64)
    assert np.nanmin(scores) >= 300 and np.nanmax(scores) <= 850
    assert all(0.0 <= p["churn_risk"] <= 1.0 for p in people)  # type: ignore[operator]
    assert {p["segment"] for p in people} <= set(schema.get("segment").vocabulary)  # type: ignore[union-attr]
    assert all(isinstance(p["has_credit_card"], bool) for p in people)
    # Some profiles have holes, as real ones do.
    assert any(p["income"] is None for p in people)
    assert len({p["customer_id"] for p in people}) == len(people)


def test_features_are_correlated_like_a_real_bank(pop: Table) -> None:
    income = pop["income"]
    seg = pop["segment"]
    assert np.nanmedian(income[seg == "vip"]) > 3 * np.nanmedian(income[seg == "mass"])
    assert pop["age"][seg == "student"].max() < 26
    products = pop["num_products"]
    owned = sum(pop[c] for c in ("has_credit_card", "has_mortgage", "has_personal_loan",
                                 "has_savings", "has_insurance", "has_mobile_plan"))
    np.testing.assert_array_equal(products, 1 + owned)
    complaints = pop["open_complaints"] > 0
    assert pop["churn_risk"][complaints].mean() > pop["churn_risk"][~complaints].mean() + 0.05
    assert np.all(pop["savings_balance"][pop["has_savings"] == 0] == 0)


def test_same_seed_same_people_however_sliced(
    schema: FeatureSchema, catalog: Catalog, sim: Simulator
) -> None:
    many = sim.customers(1200)
    assert sim.customers(10)[7] == many[7]
    assert sim.customers(5, start=1000)[2] == many[1002]
    assert Simulator(schema, catalog, seed=11).customers(20) == many[:20]
    assert Simulator(schema, catalog, seed=12).customers(20) != many[:20]


def test_dict_records_and_columns_give_the_same_truth(sim: Simulator) -> None:
    table = sim.population(300)
    from_dicts = Table.from_dicts(table.to_dicts(sim.schema))
    np.testing.assert_allclose(
        sim.true_propensity_matrix(table, channel="WEB"),
        sim.true_propensity_matrix(from_dicts, channel="WEB"),
    )
    one = table.to_dicts(sim.schema)[3]
    p = sim.true_propensity(one, 5, "CALL_CENTRE")
    assert p == pytest.approx(sim.true_propensity_matrix(table, channel="CALL_CENTRE")[3, 5])


def test_oracle_beats_random_on_every_channel(sim: Simulator, pop: Table) -> None:
    for channel in ("WEB", "MOBILE_APP", "CALL_CENTRE", "EMAIL", "BRANCH"):
        visits = sim.visits(pop, channel, seed=1)
        oracle = sim.policy_value(oracle_policy, visits, channel)
        rand = sim.policy_value(random_policy, visits, channel)
        assert oracle > 3 * rand > 0, channel


def test_policy_value_is_the_exact_expectation(sim: Simulator, pop: Table) -> None:
    visits = sim.visits(pop.take(np.arange(500)), "WEB", seed=2)
    p = sim.true_propensity_matrix(visits)
    v = sim.value_matrix(visits)
    avail = sim.available("WEB")
    expected_random = (p * v)[:, avail].mean(axis=1).mean()
    assert sim.policy_value(random_policy, visits, "WEB") == pytest.approx(expected_random)
    first = int(np.flatnonzero(avail)[0])

    def always_first(s: Simulator, t: Table, channel: str) -> np.ndarray:
        return np.full(len(t), first)

    assert sim.policy_value(always_first, visits, "WEB") == pytest.approx((p * v)[:, first].mean())

    def nothing(s: Simulator, t: Table, channel: str) -> np.ndarray:
        return np.full(len(t), -1)

    assert sim.policy_value(nothing, visits, "WEB") == 0.0


def test_fatigue_lowers_propensity_geometrically(sim: Simulator) -> None:
    person = sim.customers(1)[0]
    fresh = sim.true_propensity(person, 0, "WEB")
    tired = sim.true_propensity(person, 0, "WEB", recent_impressions=2)
    assert tired == pytest.approx(fresh * FATIGUE**2)
    assert tired < fresh


def _with(person: dict[str, object], **changes: object) -> dict[str, object]:
    return {**person, **changes}


def test_open_complaint_raises_resolve_and_sinks_sales(sim: Simulator, catalog: Catalog) -> None:
    people = sim.customers(400)
    calm = [_with(p, open_complaints=0) for p in people]
    upset = [_with(p, open_complaints=1) for p in people]
    resolve = catalog.index_of("service_resolve_complaint")
    offers = [i for i, a in enumerate(catalog.actions) if a.type == "offer"]
    p_calm = sim.true_propensity_matrix(calm, channel="CALL_CENTRE")
    p_upset = sim.true_propensity_matrix(upset, channel="CALL_CENTRE")
    assert p_upset[:, resolve].mean() > 4 * p_calm[:, resolve].mean()
    assert np.all(p_upset[:, offers] < p_calm[:, offers])


def test_interactions_the_model_must_learn(sim: Simulator, catalog: Catalog) -> None:
    base = _with(sim.customers(1)[0], has_credit_card=False, segment="mass", open_complaints=0,
                 payment_overdue_days=0)
    student = catalog.index_of("card_student")
    assert sim.true_propensity(_with(base, age=20), student, "WEB") > 5 * sim.true_propensity(
        _with(base, age=50), student, "WEB")
    savings = catalog.index_of("savings_bonus")
    rich = _with(base, balance=40_000.0, has_savings=False)
    assert sim.true_propensity(rich, savings, "WEB") > 3 * sim.true_propensity(
        _with(rich, balance=200.0), savings, "WEB")
    retention = catalog.index_of("retention_loyalty_bonus")
    assert sim.true_propensity(_with(base, churn_risk=0.9), retention, "CALL_CENTRE") > 3 * (
        sim.true_propensity(_with(base, churn_risk=0.02), retention, "CALL_CENTRE"))
    chat = catalog.index_of("chat_invite_sales")
    assert sim.true_propensity(base, chat, "WEB") > 3 * sim.true_propensity(base, chat, "EMAIL")


def test_value_follows_the_catalog_expression(sim: Simulator, catalog: Catalog) -> None:
    person = _with(sim.customers(1)[0], clv=1000.0)
    assert sim.value(person, catalog.index_of("card_gold")) == pytest.approx(0.04 * 1000 + 60)
    assert sim.value(person, catalog.index_of("card_student")) == 35.0


def test_respond_is_seeded_and_matches_the_probabilities(sim: Simulator, pop: Table) -> None:
    visits = sim.visits(pop, "WEB", seed=3)
    action = np.full(len(pop), sim.action_ids.index("card_cashback"))
    a = sim.respond(visits, action, rng=np.random.default_rng(5))
    b = sim.respond(visits, action, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.int8
    p = sim.true_propensity_matrix(visits)[:, action[0]]
    # 4000 Bernoulli draws: the mean is within 4 standard errors of the true mean.
    assert abs(a.mean() - p.mean()) < 4 * np.sqrt(p.mean() * (1 - p.mean()) / len(p))


def test_visits_add_sessions_and_context(sim: Simulator, pop: Table, schema: FeatureSchema) -> None:
    chan = np.array(["WEB", "CALL_CENTRE"] * 50, dtype=object)
    visits = sim.visits(pop.take(np.arange(100)), chan, seed=4)
    for spec in schema.of(Source.REALTIME):
        assert spec.name in visits
    web = chan == "WEB"
    assert np.all(visits["session_page_views"][web] >= 1)
    assert np.all(visits["session_page_views"][~web] == 0)
    assert all(v is None for v in visits["page_type"][~web])
    assert set(visits["page_type"][web]) <= set(schema.get("page_type").vocabulary)  # type: ignore[union-attr]
    assert np.all((visits["hour_of_day"] >= 0) & (visits["hour_of_day"] <= 23))
    with pytest.raises(ValueError, match="unknown channel"):
        sim.visits(pop.take([0]), "FAX")


def test_policy_output_is_checked(sim: Simulator, pop: Table) -> None:
    def bad(s: Simulator, t: Table, channel: str) -> np.ndarray:
        return np.full(len(t), 999)

    with pytest.raises(ValueError, match="outside the catalog"):
        sim.policy_value(bad, pop.take(np.arange(10)), "WEB")
