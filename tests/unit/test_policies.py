"""Contact policies and budgets as pure logic: verdicts, boundaries, details, pacing, fail-safe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.schema import FeatureSchema
from nba_service.engine.arbitration import Engine
from nba_service.engine.catalog import CHANNELS, Catalog, CatalogError, parse_catalog
from nba_service.engine.policies import (
    DAY_MS,
    HOUR_MS,
    ActionHistory,
    BudgetCounts,
    BudgetUsage,
    ContactHistory,
    PolicyTable,
    VerdictCode,
    contact_verdict,
    pacing_multiplier,
    policy_block_when_history_unavailable,
)
from nba_service.engine.policy_rules import budget_lever
from nba_service.engine.reasons import Stage

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
T0 = 1_700_000_000_000  # ms; 2023-11-14T22:13:20Z
MIN = 60_000


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema.from_yaml(EXAMPLES / "features.yaml")


def policy_doc() -> dict[str, Any]:
    """A small catalog exercising every policy; all channels have a fallback (a servable set)."""
    treat = {"default": {"title": "t", "text": "x"}}
    offered = ["WEB", "EMAIL", "CALL_CENTRE"]
    channels: dict[str, Any] = {ch: {"fallback": ["info_fraud_awareness"]} for ch in CHANNELS}
    channels["EMAIL"].update(max_contacts_per_day=2, contact_cooldown="1h")
    return {
        "channels": channels,
        "actions": [
            {"id": "card_gold", "type": "offer", "group": "cards", "channels": offered,
             "value": 10, "treatments": treat,
             "contact_policy": {"max_impressions": 3, "window": "7d",
                                "suppress_after_reject": "30d", "stop_after_accept": True,
                                "max_impressions_per_channel": 2},
             "budget": {"per_day": 100, "per_hour": 10}},
            {"id": "loan_personal", "type": "offer", "group": "loans", "channels": offered,
             "value": 10, "treatments": treat, "contact_policy": {"cooldown": "1d"}},
            {"id": "mortgage_first_home", "type": "offer", "group": "mortgages",
             "channels": offered, "value": 10, "treatments": treat,
             "contact_policy": {"max_impressions": 3, "window": "30d"}},
            {"id": "savings_bonus", "type": "offer", "group": "savings", "channels": offered,
             "value": 10, "treatments": treat},
            {"id": "retention_fee_waiver", "type": "retention", "group": "retention",
             "channels": offered, "value": 10, "treatments": treat,
             "budget": {"per_day": 5}},
            {"id": "info_fraud_awareness", "type": "info", "group": "info",
             "channels": list(CHANNELS), "value": 1, "fallback": True, "treatments": treat,
             "contact_policy": {"max_impressions": 1, "window": "1d"}},
        ],
    }


@pytest.fixture(scope="module")
def catalog(schema: FeatureSchema) -> Catalog:
    return parse_catalog(policy_doc(), schema)


@pytest.fixture(scope="module")
def table(catalog: Catalog) -> PolicyTable:
    return PolicyTable(catalog)


def _verdict(catalog: Catalog, action: str, h: ActionHistory, now: int,
             channel: str = "WEB", contacts: tuple[int, ...] = ()) -> Any:
    a = catalog.actions[catalog.index_of(action)]
    return contact_verdict(a.contact_policy, catalog.channel_limits.get(channel), a.fallback, h,
                           contacts, channel, now)


# ---------------------------------------------------------------- contact_verdict
def test_rolling_window_counts_impressions_strictly_inside(catalog: Catalog) -> None:
    week = 7 * DAY_MS
    h = ActionHistory(impressions=(T0, T0 + 1, T0 + 2))
    v = _verdict(catalog, "card_gold", h, T0 + 10)
    assert v.code is VerdictCode.MAX_IMPRESSIONS and v.until_ms == T0 + week
    # One ms before the oldest leaves the window it still counts; at now - window = t it is out.
    assert _verdict(catalog, "card_gold", h, T0 + week - 1).code is VerdictCode.MAX_IMPRESSIONS
    assert _verdict(catalog, "card_gold", h, T0 + week) is None


def test_until_is_when_enough_impressions_left_the_window(catalog: Catalog) -> None:
    h = ActionHistory(impressions=(T0, T0 + 5, T0 + 9, T0 + 20))
    v = _verdict(catalog, "card_gold", h, T0 + 30)
    # 4 counted, cap 3: two must leave, the second of them at T0 + 5.
    assert v.until_ms == T0 + 5 + 7 * DAY_MS
    assert _verdict(catalog, "card_gold", h, v.until_ms - 1) is not None
    assert _verdict(catalog, "card_gold", h, v.until_ms) is None


def test_per_channel_cap_counts_only_that_channel(catalog: Catalog) -> None:
    h = ActionHistory(impressions=(T0, T0 + 1), by_channel={"EMAIL": (T0, T0 + 1)})
    assert _verdict(catalog, "card_gold", h, T0 + 2, "EMAIL").code \
        is VerdictCode.MAX_IMPRESSIONS_CHANNEL
    assert _verdict(catalog, "card_gold", h, T0 + 2, "WEB") is None


def test_reject_suppresses_for_the_duration_on_every_channel(catalog: Catalog) -> None:
    h = ActionHistory(last_reject_ms=T0)
    for ch in ("WEB", "EMAIL"):
        v = _verdict(catalog, "card_gold", h, T0 + 29 * DAY_MS, ch)
        assert v.code is VerdictCode.REJECTED and v.until_ms == T0 + 30 * DAY_MS
    assert _verdict(catalog, "card_gold", h, T0 + 30 * DAY_MS) is None


def test_accept_stops_forever_only_with_stop_after_accept(catalog: Catalog) -> None:
    h = ActionHistory(accepted_ms=T0)
    assert _verdict(catalog, "card_gold", h, T0 + 1000 * DAY_MS).code is VerdictCode.ACCEPTED
    assert _verdict(catalog, "loan_personal", h, T0 + 1) is None


def test_cooldown_after_the_last_impression(catalog: Catalog) -> None:
    h = ActionHistory(impressions=(T0,))
    assert _verdict(catalog, "loan_personal", h, T0 + DAY_MS - 1).code is VerdictCode.COOLDOWN
    assert _verdict(catalog, "loan_personal", h, T0 + DAY_MS) is None


def test_channel_limits_apply_across_actions_but_not_to_fallbacks(catalog: Catalog) -> None:
    empty = ActionHistory()
    two = (T0, T0 + 2 * HOUR_MS)
    v = _verdict(catalog, "savings_bonus", empty, T0 + 3 * HOUR_MS, "EMAIL", two)
    assert v.code is VerdictCode.CHANNEL_MAX_CONTACTS and v.until_ms == T0 + DAY_MS
    assert _verdict(catalog, "savings_bonus", empty, T0 + DAY_MS, "EMAIL", two) is None
    v = _verdict(catalog, "savings_bonus", empty, T0 + 30 * MIN, "EMAIL", (T0,))
    assert v.code is VerdictCode.CHANNEL_COOLDOWN and v.until_ms == T0 + HOUR_MS
    assert _verdict(catalog, "info_fraud_awareness", empty, T0 + 1, "EMAIL", two) is None
    assert _verdict(catalog, "savings_bonus", empty, T0 + 1, "WEB", two) is None


def test_checks_run_in_the_documented_order(catalog: Catalog) -> None:
    h = ActionHistory(impressions=(T0, T0 + 1, T0 + 2), last_reject_ms=T0, accepted_ms=T0)
    assert _verdict(catalog, "card_gold", h, T0 + 3).code is VerdictCode.ACCEPTED
    h = ActionHistory(impressions=(T0, T0 + 1, T0 + 2), last_reject_ms=T0)
    assert _verdict(catalog, "card_gold", h, T0 + 3).code is VerdictCode.REJECTED


# ---------------------------------------------------------------- PolicyTable.evaluate
def test_evaluate_blocks_with_stage_and_readable_detail(catalog: Catalog,
                                                        table: PolicyTable) -> None:
    cands = np.arange(len(catalog), dtype=np.int64)
    hist = ContactHistory(actions={
        "card_gold": ActionHistory(impressions=(T0, T0 + 1, T0 + 2)),
        "loan_personal": ActionHistory(impressions=(T0,)),
    })
    out = table.evaluate(cands, "WEB", hist, {}, T0 + HOUR_MS)
    assert out.block.tolist() == [Stage.CONTACT_POLICY, Stage.CONTACT_POLICY, 0, 0, 0, 0]
    assert out.details[0] == "max 3 impressions / 7d reached until 2023-11-21T22:13:20Z"
    assert out.details[1].startswith("cooldown 1d after last impression until ")
    assert out.lever_scale is None


def test_evaluate_budget_cap_and_pacing(catalog: Catalog, table: PolicyTable) -> None:
    cands = np.array([0, 2], dtype=np.int64)
    noon = (T0 // DAY_MS) * DAY_MS + 12 * HOUR_MS + 30 * MIN  # half past noon UTC
    out = table.evaluate(cands, "WEB", ContactHistory(), {"card_gold": BudgetUsage(100, 3)}, noon)
    assert out.block.tolist() == [Stage.BUDGET, 0]
    assert out.details[0].startswith("day cap 100 reached until ")
    out = table.evaluate(cands, "WEB", ContactHistory(), {"card_gold": BudgetUsage(5, 10)}, noon)
    assert out.block.tolist() == [Stage.BUDGET, 0] and out.details[0].startswith("hour cap 10")
    # 80 of 100 spent at 12:30: remaining 0.2 of the day's budget for 0.479 of the day.
    out = table.evaluate(cands, "WEB", ContactHistory(), {"card_gold": BudgetUsage(80, 2)}, noon)
    assert out.block.tolist() == [0, 0] and out.lever_scale is not None
    assert out.lever_scale[0] == pytest.approx(0.2 / (1 - 12.5 / 24))
    assert out.lever_scale[1] == 1.0


def test_channel_block_reaches_actions_without_own_policy(catalog: Catalog,
                                                          table: PolicyTable) -> None:
    cands = np.arange(len(catalog), dtype=np.int64)
    hist = ContactHistory(contacts={"EMAIL": (T0, T0 + 1)})
    out = table.evaluate(cands, "EMAIL", hist, {}, T0 + 2 * HOUR_MS)
    assert out.block.tolist() == [Stage.CONTACT_POLICY] * 5 + [0]
    assert out.details[2].startswith("channel EMAIL: max 2 contacts / 24h reached until ")


def test_history_unavailable_leaves_only_cap_exempt_actions(catalog: Catalog,
                                                            table: PolicyTable) -> None:
    cands = np.arange(len(catalog), dtype=np.int64)
    web = policy_block_when_history_unavailable(table, cands, "WEB")
    # savings_bonus has no policy or budget and WEB no channel limits: nothing to know about it.
    cp = Stage.CONTACT_POLICY
    assert web.block.tolist() == [cp, cp, cp, 0, cp, 0]
    assert "contact history unavailable" in web.details[0]
    email = policy_block_when_history_unavailable(table, cands, "EMAIL")
    assert email.block.tolist() == [cp] * 5 + [0]


def test_engine_rank_applies_policy_block_and_lever_scale(catalog: Catalog,
                                                          schema: FeatureSchema) -> None:
    engine = Engine(catalog, schema)
    row = np.full(len(schema.features), np.nan, dtype=np.float32)
    cands = engine.candidates_for("WEB")
    prop = np.full(len(cands), 0.5)
    block = np.array([Stage.CONTACT_POLICY, 0, 0, 0, 0, 0], dtype=np.int32)
    scale = np.array([1.0, 0.25, 1.0, 1.0, 1.0, 1.0])
    r = engine.rank(row, cands, prop, "WEB", {}, 6, policy_block=block, lever_scale=scale)
    assert r.removed_by(0) == "CONTACT_POLICY"
    assert r.lever[1] == pytest.approx(0.25) and r.priority[1] == pytest.approx(0.5 * 10 * 0.25)
    # The catalog's own levers are untouched by a scaled request.
    r2 = engine.rank(row, cands, prop, "WEB", {}, 6)
    assert r2.lever[1] == 1.0


# ---------------------------------------------------------------- pacing
def test_pacing_values() -> None:
    assert pacing_multiplier(0, 100, 0.0) == 1.0
    assert pacing_multiplier(50, 100, 0.5) == 1.0  # exactly on pace
    assert pacing_multiplier(100, 100, 0.1) == 0.0  # exhausted
    assert pacing_multiplier(75, 100, 0.5) == pytest.approx(0.5)
    assert pacing_multiplier(75, 100, 0.5, exponent=2.0) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        pacing_multiplier(0, 0, 0.5)


@given(used=st.integers(0, 2000), cap=st.integers(1, 1000), t=st.floats(0, 0.999999),
       exp=st.floats(0.25, 4))
def test_pacing_properties(used: int, cap: int, t: float, exp: float) -> None:
    m = pacing_multiplier(used, cap, t, exp)
    assert 0.0 <= m <= 1.0
    assert (m == 0.0) == (used >= cap)
    if used / cap <= t:  # on or behind pace
        assert m == 1.0
    # More spent never raises the lever; more time elapsed never lowers it.
    assert pacing_multiplier(used + 1, cap, t, exp) <= m
    assert pacing_multiplier(used, cap, min(t + 0.01, 0.999999), exp) >= m


@given(used=st.integers(0, 99), t1=st.floats(0, 0.99), dt=st.floats(0, 1e-3))
def test_pacing_is_continuous_in_time(used: int, t1: float, dt: float) -> None:
    # Smoothness: a small step in time moves the multiplier by a bounded amount.
    a = pacing_multiplier(used, 100, t1)
    b = pacing_multiplier(used, 100, min(t1 + dt, 0.999))
    assert abs(b - a) <= 1.0 * dt / (1 - min(t1 + dt, 0.999)) ** 2 + 1e-9


def test_budget_lever_takes_the_tighter_period(catalog: Catalog) -> None:
    budget = catalog.actions[0].budget
    assert budget is not None
    start = (T0 // DAY_MS) * DAY_MS
    now = start + 6 * HOUR_MS + 30 * MIN  # 06:30 UTC: 6.5/24 of the day, half the hour
    assert budget_lever(budget, BudgetUsage(25, 5), now) == 1.0
    assert budget_lever(budget, BudgetUsage(25, 8), now) == pytest.approx(0.2 / 0.5)
    assert budget_lever(budget, BudgetUsage(85, 1), now) == pytest.approx(0.15 / (1 - 6.5 / 24))


# ---------------------------------------------------------------- catalog fields
@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("actions", 0, "contact_policy"), {"max_impressions": 3},
         "max_impressions and window go together"),
        (("actions", 0, "contact_policy"), {"max_impressions_per_channel": 2},
         "max_impressions_per_channel needs a window"),
        (("actions", 0, "contact_policy"), {"stop_after_accept": "yes"},
         "contact_policy.stop_after_accept"),
        (("actions", 0, "budget"), {"per_day": 0}, "budget.per_day"),
        (("actions", 0, "budget"), {"per_day": 5, "pacing_exponent": 0},
         "budget.pacing_exponent"),
        (("actions", 0, "budget"), {"pacing": True}, "per_hour and/or per_day"),
        (("channels", "EMAIL"), {"fallback": ["info_fraud_awareness"],
                                 "max_contacts_per_day": -1}, "max_contacts_per_day"),
        (("channels", "EMAIL"), {"fallback": ["info_fraud_awareness"],
                                 "contact_cooldown": "soon"}, "contact_cooldown"),
    ],
)
def test_bad_policy_fields_fail_at_load(schema: FeatureSchema, path: tuple[Any, ...],
                                        value: object, message: str) -> None:
    doc = policy_doc()
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(CatalogError, match=message):
        parse_catalog(doc, schema)


def test_demo_catalog_policies_parse(schema: FeatureSchema) -> None:
    from nba_service.engine.catalog import load_catalog

    cat = load_catalog(EXAMPLES / "catalog.yaml", schema)
    assert cat.channel_limits, "the demo declares contact limits for some channels"
    table = PolicyTable(cat)
    cands = np.arange(len(cat), dtype=np.int64)
    assert table.budgeted(cands), "the demo has budgeted actions"
    for i, a in enumerate(cat.actions):
        p = table.admission(i, "EMAIL")
        assert p.enforce == (not a.fallback)


@given(st.lists(st.tuples(st.integers(0, 120), st.integers(0, 15)), min_size=2, max_size=2),
       st.integers(0, 10 * DAY_MS))
def test_vectorised_budgets_equal_the_scalar_rules(table: PolicyTable,
                                                   used: list[tuple[int, int]],
                                                   offset: int) -> None:
    from nba_service.engine.policy_rules import budget_verdict

    cands = np.array([0, 4], dtype=np.int64)  # card_gold (day 100, hour 10), retention (day 5)
    now = T0 + offset
    usage = {"card_gold": BudgetUsage(*used[0]), "retention_fee_waiver": BudgetUsage(*used[1])}
    out = table.evaluate(cands, "WEB", ContactHistory(), usage, now)
    for pos, aid in enumerate(("card_gold", "retention_fee_waiver")):
        budget = table.catalog.actions[int(cands[pos])].budget
        assert budget is not None
        v = budget_verdict(budget, usage[aid], now)
        assert out.verdicts.get(pos) == v
        expected = 1.0 if v is not None else budget_lever(budget, usage[aid], now)
        got = 1.0 if out.lever_scale is None else out.lever_scale[pos]
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_budget_kernel_is_compiled_once_at_load(table: PolicyTable) -> None:
    from nba_service.engine import policy_kernel

    engine = Engine(table.catalog, FeatureSchema.from_yaml(EXAMPLES / "features.yaml"))
    shared = engine.candidates_for("WEB")  # read-only, as requests pass it
    assert not shared.flags.writeable
    before = len(policy_kernel.budget_pass.signatures)
    assert before == 1  # compiled (or loaded) when the table was built
    table.evaluate(shared, "WEB", ContactHistory(), {"card_gold": BudgetUsage(3, 1)}, T0)
    table.evaluate(shared[::-1], "EMAIL", ContactHistory(), {}, T0 + 1)
    strided = BudgetCounts(np.array([[1.0, 2.0], [3.0, 4.0]])[:, 0],
                           np.array([[1.0, 2.0], [3.0, 4.0]])[:, 1])
    table.evaluate(shared, "WEB", ContactHistory(), strided, T0 + 2)
    assert len(policy_kernel.budget_pass.signatures) == before
