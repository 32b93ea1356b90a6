"""Golden formats of the contact history hash and the budget keys, and their parsing."""

from __future__ import annotations

import numpy as np

from features.schema import FeatureSchema
from nba_service.engine.catalog import parse_catalog
from nba_service.engine.policies import ActionHistory, PolicyTable, VerdictCode
from nba_service.store.outcomes import OutcomeStatus, OutcomeWriter
from nba_service.store.policies import (
    PolicyRead,
    budget_counts,
    budget_keys,
    budget_read_commands,
    decision_key,
    parse_history,
)

from .test_policies import policy_doc

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def test_history_fields_parse_into_the_policy_view() -> None:
    raw = {
        b"#i|card_gold": b"1700000000000,1700000000500",
        b"#ic|card_gold|WEB": b"1700000000500",
        b"#ic|card_gold|EMAIL": b"1700000000000",
        b"#r|card_gold": b"1700000001000",
        b"#a|loan_personal": b"1700000002000",
        b"#k|EMAIL": b"1700000000000",
        b"card_gold|impression|n": b"2",  # per-outcome counters are not the policies' business
        b"card_gold|impression|t": b"1700000000500",
        b"#i|broken": b"12,x",  # unreadable: absent, never a crash
    }
    h = parse_history(raw)
    assert h.of("card_gold") == ActionHistory(
        impressions=(T0, T0 + 500),
        by_channel={"WEB": (T0 + 500,), "EMAIL": (T0,)},
        last_reject_ms=T0 + 1000,
    )
    assert h.of("loan_personal").accepted_ms == T0 + 2000
    assert h.contacts == {"EMAIL": (T0,)}
    assert h.of("broken") == ActionHistory() and h.of("never") == ActionHistory()
    assert parse_history({}).actions == {}


def test_key_formats_are_stable() -> None:
    assert budget_keys(T0) == ("nba:{b}:bd:20231114", "nba:{b}:bh:2023111422")
    assert decision_key("42", "abc") == "nba:{c:42}:d:abc"
    assert budget_read_commands(T0) == [
        ("HGETALL", "nba:{b}:bd:20231114"), ("HGETALL", "nba:{b}:bh:2023111422")]


def test_budget_replies_parse_missing_and_unreadable_as_zero() -> None:
    day = {b"a": b"7", b"b": b"not a number", b"other": b"9"}
    got = budget_counts([b"a", b"b", b"c"], day, {b"c": b"2"})
    assert got.day.tolist() == [7, 0, 0] and got.hour.tolist() == [0, 0, 2]
    none = budget_counts([b"a"], None, [])  # absent hashes, or a reply of the wrong shape
    assert none.day.tolist() == [0] and none.hour.tolist() == [0]


def test_policy_read_asks_for_the_period_counters_once(demo_schema: FeatureSchema) -> None:
    catalog = parse_catalog(policy_doc(), demo_schema)
    table = PolicyTable(catalog)
    cands = np.arange(len(catalog), dtype=np.int64)
    read = PolicyRead(table, cands, "WEB", T0)
    assert read.budget_ids == ["card_gold", "retention_fee_waiver"]
    assert read.commands == budget_read_commands(T0)
    replies = [{b"card_gold": b"5", b"retention_fee_waiver": b"5"}, {b"card_gold": b"5"},
               "the next extra reply belongs to someone else"]
    out = read.evaluate(cands, {b"#i|loan_personal": str(T0 - 1000).encode()}, replies)
    assert out.block.tolist() == [0, 6, 0, 0, 7, 0]
    assert out.details[4].startswith("day cap 5 reached until 2023-11-15T00:00:00Z")
    # Without budgeted candidates the fetch carries no budget reads at all.
    budgeted = {catalog.index_of("card_gold"), catalog.index_of("retention_fee_waiver")}
    plain = np.array([a for a in cands if a not in budgeted], dtype=np.int64)
    assert PolicyRead(table, plain, "WEB", T0).commands == []


def test_outcome_script_arguments_and_replies() -> None:
    class NoScripts:
        def register_script(self, text: str) -> None:
            return None

    writer = OutcomeWriter(NoScripts())
    keys, args = writer.script_call("c1", "card_gold", "impression", "ev", T0, 2.5,
                                    channel="WEB", decision_id="d1")
    assert keys == ["nba:{c:c1}:e:ev", "nba:{c:c1}:h", "nba:{c:c1}:d:d1"]
    assert args[:8] == ["card_gold", "impression", T0, "2.5", 7 * 86400, "d1", "WEB", 0]
    assert OutcomeWriter.decode([1]).applied
    assert OutcomeWriter.decode([0]).status is OutcomeStatus.DUPLICATE
    assert OutcomeWriter.decode([-1]).status is OutcomeStatus.UNKNOWN_DECISION
    assert OutcomeWriter.decode([-2]).status is OutcomeStatus.NOT_SERVED
    refused = OutcomeWriter.decode([-3, b"cooldown", T0])
    assert refused.status is OutcomeStatus.REFUSED and refused.verdict is not None
    assert (refused.verdict.code, refused.verdict.until_ms) == (VerdictCode.COOLDOWN, T0)
