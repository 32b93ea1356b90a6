"""Staleness and event validation: pure logic, no Redis."""

from __future__ import annotations

import math

import numpy as np
import pytest

from features.encoding import encode_batch_values
from features.packing import PackedRecord
from features.realtime import Freshness, ts_field, validate_events
from features.schema import FeatureSchema

DAY_MS = 86_400_000
NOW = 1_700_000_000_000


@pytest.fixture(scope="module")
def fresh(demo_schema: FeatureSchema) -> Freshness:
    return Freshness(demo_schema)


def test_cold_start_is_all_defaults(fresh: Freshness, demo_schema: FeatureSchema) -> None:
    vec, missing, stale = fresh.batch(None, NOW)
    np.testing.assert_array_equal(vec, encode_batch_values(demo_schema, {}))
    assert missing == fresh.batch_names and stale == ()


def test_batch_staleness_is_per_feature_max_age(
    fresh: Freshness, demo_schema: FeatureSchema
) -> None:
    values = {"age": 30, "balance": 1234.5, "open_complaints": 3, "segment": "vip"}
    rec = PackedRecord(encode_batch_values(demo_schema, values), NOW - 3 * DAY_MS)
    vec, missing, stale = fresh.batch(rec, NOW)
    names = fresh.batch_names
    # 3 days old: balance (7d) and age (400d) fresh; open_complaints (1d) and
    # days_since_last_contact / payment_overdue_days (1-2d) stale
    assert vec[names.index("age")] == 30 and vec[names.index("balance")] == 1234.5
    assert "open_complaints" in stale and vec[names.index("open_complaints")] == 0
    assert set(stale) == {"open_complaints", "days_since_last_contact", "payment_overdue_days"}
    assert "region" in missing  # NaN in the record: region has no default, stays NaN
    assert math.isnan(vec[names.index("region")])
    assert not set(missing) & set(stale)


def test_fresh_record_is_returned_unchanged(fresh: Freshness, demo_schema: FeatureSchema) -> None:
    values = {"region": "north"}
    rec = PackedRecord(encode_batch_values(demo_schema, values), NOW)
    vec, missing, stale = fresh.batch(rec, NOW + 1000)
    assert missing == () and stale == ()
    assert vec is rec.vector


def test_realtime_decoding_and_staleness(fresh: Freshness) -> None:
    names = fresh.realtime_names
    fields = {
        b"session_page_views": b"7",
        ts_field("session_page_views").encode(): str(NOW - 60_000).encode(),
        b"cart_value": b"19.5",
        ts_field("cart_value").encode(): str(NOW - 3 * 3_600_000).encode(),
        b"errors_seen": b"2",  # no timestamp: cannot be shown fresh
        b"failed_logins": b"abc", b"failed_logins:ts": str(NOW).encode(),
        b"hours_since_complaint": b"5", b"hours_since_complaint:ts": b"xx",
    }
    vec, missing, stale, problems = fresh.realtime(fields, NOW)
    assert vec[names.index("session_page_views")] == 7
    assert vec[names.index("cart_value")] == 0 and "cart_value" in stale  # 3h > 2h
    assert "errors_seen" in stale
    assert "session_dwell_s" in missing and "failed_logins" in missing
    assert vec[names.index("hours_since_complaint")] == 9999
    assert problems == ("bad_realtime_value:failed_logins", "bad_realtime_ts:hours_since_complaint")


def test_realtime_ttl_is_longest_max_age(fresh: Freshness) -> None:
    assert fresh.realtime_ttl_ms == 30 * DAY_MS


def test_validate_events_encodes_and_canonicalises(demo_schema: FeatureSchema) -> None:
    got = validate_events(
        demo_schema,
        [("session_page_views", 1, "add"), ("cart_value", "12.25", "set"),
         ("session_dwell_s", 30, "MAX")],
    )
    assert [(e.name, e.op, e.value, e.max_age_ms) for e in got] == [
        ("session_page_views", "incr", "1.0", 1_800_000),
        ("cart_value", "set", "12.25", 7_200_000),
        ("session_dwell_s", "max", "30.0", 1_800_000),
    ]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (("nope", 1, "set"), "unknown feature 'nope'"),
        (("age", 1, "set"), "'age' is a batch feature"),
        (("cart_value", 1, "mul"), "unknown op 'mul'"),
        (("cart_value", "lots", "incr"), "value 'lots' is not a valid float"),
        (("cart_value", None, "set"), "value None"),
        (("cart_value", 1), "expected \\(name, value, op\\)"),
    ],
)
def test_validate_events_rejects(demo_schema: FeatureSchema, event: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_events(demo_schema, [("session_page_views", 1, "incr"), event])
