"""The one-call policy pass (`policy_scan`) against the Python reference, on any reply."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.schema import FeatureSchema
from nba_service.engine import policy_scan
from nba_service.engine.catalog import parse_catalog
from nba_service.engine.policies import DAY_MS, PolicyOutcome, PolicyTable, VerdictCode
from nba_service.store.policies import PolicyRead
from tests.unit.test_policies import EXAMPLES, T0, policy_doc

SCHEMA = FeatureSchema.from_yaml(EXAMPLES / "features.yaml")
TABLE = PolicyTable(parse_catalog(policy_doc(), SCHEMA))
IDS = [a.id for a in TABLE.catalog.actions]
CHANNELS = ["WEB", "EMAIL", "CALL_CENTRE"]

# Times are offsets before `now`: exact window, cooldown and suppression boundaries (and one ms
# either side) as often as arbitrary ones, so every comparison is tried on its edge.
EDGES = [0, 3_600_000, DAY_MS, 7 * DAY_MS, 30 * DAY_MS]
ages = st.one_of(st.sampled_from(EDGES).flatmap(lambda e: st.sampled_from([e - 1, e, e + 1])),
                 st.integers(-DAY_MS, 40 * DAY_MS))
GARBAGE = [b"", b"-", b"12a", b" 5", b"+5", b"1_0", b"9" * 19, "\u00e9".encode()]


def history_fields(now: int) -> st.SearchStrategy[tuple[bytes, bytes, bytes]]:
    times = ages.map(lambda d: now - d)
    numbers = st.one_of(times.map(lambda t: str(t).encode()), times.map(lambda t: str(t).encode()),
                        st.sampled_from(GARBAGE))
    ordered = st.lists(times, min_size=1, max_size=5).map(
        lambda ts: b",".join(str(t).encode() for t in sorted(ts)))
    lists = st.one_of(
        ordered, ordered,
        st.lists(times, max_size=4).map(lambda ts: b",".join(str(t).encode() for t in ts)),
        numbers, st.sampled_from([b"", b"1,,2", b",", b"1,x", b"9" * 19]))
    names = st.one_of(st.sampled_from(IDS),
                      st.sampled_from(["unknown", "", "card_gold|WEB", "card_gol"])
                      ).map(str.encode)
    channels = st.sampled_from([*CHANNELS, "SMS", "", "WEB|EMAIL"]).map(str.encode)
    return st.one_of(
        st.tuples(st.just(b"#i|"), names, lists),
        st.tuples(st.just(b"#i|"), names, lists),
        st.tuples(st.just(b"#ic|"),
                  st.tuples(names, channels).map(lambda t: t[0] + b"|" + t[1]), lists),
        st.tuples(st.sampled_from([b"#r|", b"#a|"]), names, numbers),
        st.tuples(st.just(b"#k|"), channels, lists),
        st.tuples(st.sampled_from([b"#x|", b"#", b"#i", b"", b"card_gold|impression|n|"]),
                  names, numbers),
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[int, dict[bytes, bytes], Any, Any]:
    # Periods of the day from their very start, where pacing is most sensitive to the counts.
    now = T0 - T0 % DAY_MS + draw(st.one_of(st.integers(0, DAY_MS - 1),
                                            st.integers(0, 2 * 3_600_000)))
    fs = draw(st.lists(history_fields(now), max_size=12))
    history = {k + n: v for k, n, v in fs}
    budgeted = st.sampled_from(["card_gold", "retention_fee_waiver", "savings_bonus",
                                "unknown"]).map(str.encode)
    count = st.one_of(st.integers(-2, 120).map(lambda n: str(n).encode()),
                      st.sampled_from([b"4", b"5", b"9", b"10", b"99", b"100", *GARBAGE]))
    reply = st.one_of(st.dictionaries(budgeted, count, max_size=4), st.none(), st.just([]))
    return now, history, draw(reply), draw(reply)


def same(a: PolicyOutcome, b: PolicyOutcome) -> None:
    assert a.block.tolist() == b.block.tolist()
    assert dict(a.verdicts) == dict(b.verdicts)
    la = np.ones(len(a.block)) if a.lever_scale is None else a.lever_scale
    lb = np.ones(len(b.block)) if b.lever_scale is None else b.lever_scale
    assert la.tolist() == pytest.approx(lb.tolist(), rel=1e-12, abs=1e-15)
    assert dict(a.details) == dict(b.details)


@settings(max_examples=1500, deadline=None)
@given(cases(), st.sampled_from([*CHANNELS, "SMS"]), st.permutations(range(len(IDS))),
       st.integers(1, len(IDS)))
def test_scan_equals_the_python_reference(case: tuple[int, dict[bytes, bytes], Any, Any],
                                          channel: str, order: list[int], k: int) -> None:
    now, history, day, hour = case
    cands = np.array(order[:k], dtype=np.int64)
    read = PolicyRead(TABLE, cands, channel, now)
    extra = [day, hour] if read.commands else []
    got = read.evaluate(cands, history, extra)
    assert got._codes is not None, "well-formed replies take the kernel path"
    same(got, read.reference(cands, history, extra))


def test_scan_sees_every_policy() -> None:
    """Hand-made replies blocking each candidate for a different reason, read in one call."""
    now = T0 + 12 * 3_600_000
    cands = np.arange(len(IDS), dtype=np.int64)
    history = {
        b"#i|card_gold": f"{now - 3000},{now - 2000},{now - 1000}".encode(),
        b"card_gold|impression|n": b"3",
        b"#r|loan_personal": str(now - DAY_MS).encode(),  # no suppression on this action
        b"#i|loan_personal": str(now - 3_600_000).encode(),  # cooldown 1d
        b"#a|mortgage_first_home": str(now - 90 * DAY_MS).encode(),  # no stop_after_accept
        b"#k|EMAIL": f"{now - 7_200_000},{now - 600_000}".encode(),
    }
    read = PolicyRead(TABLE, cands, "EMAIL", now)
    out = read.evaluate(cands, history, [{b"retention_fee_waiver": b"5"}, {}])
    codes = {IDS[i]: v.code for i, v in out.verdicts.items()}
    assert codes == {
        "card_gold": VerdictCode.MAX_IMPRESSIONS,
        "loan_personal": VerdictCode.COOLDOWN,
        "mortgage_first_home": VerdictCode.CHANNEL_MAX_CONTACTS,
        "savings_bonus": VerdictCode.CHANNEL_MAX_CONTACTS,
        "retention_fee_waiver": VerdictCode.CHANNEL_MAX_CONTACTS,
    }  # the fallback is exempt from the channel's limits
    assert out.verdicts[0].until_ms == now - 3000 + 7 * DAY_MS
    same(out, read.reference(cands, history, [{b"retention_fee_waiver": b"5"}, {}]))


def test_ambiguous_replies_take_the_reference_path() -> None:
    cands = np.arange(len(IDS), dtype=np.int64)
    read = PolicyRead(TABLE, cands, "WEB", T0)
    odd = {b"#r|card_gold": str(T0 - 1).encode(), b"note": b"two\nlines"}
    joined = policy_scan.buffers(odd)
    assert joined is not None and TABLE.scan(cands, "WEB", joined, joined, joined, T0) is None
    out = read.evaluate(cands, odd, [{}, {}])
    assert out._codes is None and out.verdicts[0].code is VerdictCode.REJECTED
    # The same in a field name, and in a budget counter's.
    for replies in ([{b"card\ngold": b"1"}, {}], [{}, {b"x": b"1\n2"}]):
        history = {b"#r|card_gold": str(T0 - 1).encode()}
        out = read.evaluate(cands, history, replies)
        assert out._codes is None
        same(out, read.reference(cands, history, replies))
    assert policy_scan.buffers({"text": "keys"}) is None


def test_requests_never_compile() -> None:
    engine_cands = np.arange(len(IDS), dtype=np.int64)
    engine_cands.setflags(write=False)
    before = len(policy_scan.scan.signatures)
    assert before == 1  # compiled (or loaded) when the table was built
    for ch in ("WEB", "EMAIL", "SMS"):
        read = PolicyRead(TABLE, engine_cands, ch, T0)
        read.evaluate(engine_cands[::-1], {b"#i|card_gold": b"1,2"},
                      [{b"card_gold": b"3"}, {}])
    assert len(policy_scan.scan.signatures) == before


BOUNDARY_FIELDS = [  # (field, how many impressions share the time)
    (b"#r|card_gold", 1), (b"#a|card_gold", 1), (b"#i|card_gold", 3), (b"#i|loan_personal", 1),
    (b"#ic|card_gold|EMAIL", 2), (b"#i|info_fraud_awareness", 1), (b"#k|EMAIL", 1),
    (b"#k|EMAIL", 2),
]


@pytest.mark.parametrize("edge", EDGES)
@pytest.mark.parametrize(("field", "repeat"), BOUNDARY_FIELDS)
def test_scan_equals_the_reference_on_every_boundary(field: bytes, repeat: int,
                                                     edge: int) -> None:
    """One ms before, on and after each window, cooldown and suppression edge."""
    now = T0 - T0 % DAY_MS + 3 * 3_600_000
    cands = np.arange(len(IDS), dtype=np.int64)
    for delta in (-1, 0, 1):
        value = b",".join([str(now - edge - delta).encode()] * repeat)
        for channel in ("WEB", "EMAIL"):
            read = PolicyRead(TABLE, cands, channel, now)
            history = {field: value}
            got = read.evaluate(cands, history, [{}, {}])
            assert got._codes is not None
            same(got, read.reference(cands, history, [{}, {}]))


def test_numbers_are_at_most_18_digits_as_in_the_reference() -> None:
    cands = np.arange(len(IDS), dtype=np.int64)
    read = PolicyRead(TABLE, cands, "WEB", T0)
    for value, blocked in ((b"9" * 18, True), (b"9" * 19, False), (b"-12", True),
                           (b"+12", False), (b"12 ", False)):
        out = read.evaluate(cands, {b"#a|card_gold": value}, [{}, {}])
        assert bool(out.block[0]) is blocked, value
        same(out, read.reference(cands, {b"#a|card_gold": value}, [{}, {}]))
