"""RowEncoder: column order, imputation, the `out` buffer and training/serving equality."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from features.encoding import (
    RowEncoder,
    encode_batch_values,
    encode_realtime_values,
    encode_rows,
)
from features.packing import pack, unpack
from features.schema import FeatureSchema, Source

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema.from_yaml(EXAMPLES / "features.yaml")


ACTIONS: list[dict[str, object]] = [
    {"id": "card_gold", "type": "offer", "group": "cards", "value": 120.0},
    {"id": "loan_car", "type": "offer", "group": "loans", "value": 300},
    {"id": "brand_new_thing", "type": "info", "group": "info", "value": None},
    {"id": "service_payment_plan", "action_type": "service", "group": "service", "value": "7.5"},
]

CUSTOMER: dict[str, object] = {
    "age": 37,
    "income": 52000.5,
    "segment": "gold",
    "region": "capital",
    "has_credit_card": True,
    "consent_sms": "no",
    "session_page_views": 4,
    "cart_value": 19.99,
    "channel": "WEB",
    "hour_of_day": 14,
    "page_type": "pricing",
}


@pytest.fixture(scope="module")
def encoder(schema: FeatureSchema) -> RowEncoder:
    return RowEncoder(schema, ACTIONS)


def test_customer_row_places_each_source_in_schema_columns(
    schema: FeatureSchema, encoder: RowEncoder
) -> None:
    batch = encode_batch_values(schema, CUSTOMER)
    realtime = encode_realtime_values(schema, CUSTOMER)
    row = encoder.customer_row(batch, realtime, CUSTOMER)
    assert row.dtype == np.float32 and row.shape == (len(schema.features),)
    assert row[schema.index("age")] == 37
    assert row[schema.index("segment")] == 2  # gold is vocabulary[2]
    assert row[schema.index("has_credit_card")] == 1
    assert row[schema.index("consent_sms")] == 0
    assert row[schema.index("tenure_months")] == 12  # default imputed
    assert row[schema.index("region")] == 4  # capital
    assert math.isnan(row[schema.index("action_id")])
    assert row[schema.index("session_page_views")] == 4
    assert row[schema.index("hours_since_complaint")] == 9999  # realtime default
    assert row[schema.index("channel")] == 0  # WEB
    assert row[schema.index("page_type")] == 2
    for col in schema.columns_of(Source.ACTION):
        assert math.isnan(row[col])


def test_context_missing_or_unknown_is_default_imputed(
    schema: FeatureSchema, encoder: RowEncoder
) -> None:
    batch = encode_batch_values(schema, {})
    realtime = encode_realtime_values(schema, {})
    row = encoder.customer_row(batch, realtime, {"channel": "CARRIER_PIGEON"})
    # channel, hour_of_day and page_type have no default: missing encodes as NaN
    assert math.isnan(row[schema.index("channel")])
    assert math.isnan(row[schema.index("hour_of_day")])


def test_encode_fills_action_columns_per_candidate(
    schema: FeatureSchema, encoder: RowEncoder
) -> None:
    row = encoder.customer_row(
        encode_batch_values(schema, CUSTOMER), encode_realtime_values(schema, CUSTOMER), CUSTOMER
    )
    m = encoder.encode(row, np.array([1, 0, 3, 2, 1]))
    assert m.shape == (5, len(schema.features)) and m.dtype == np.float32
    t, g, v, i = (schema.index(n) for n in ("action_type", "action_group", "action_value",
                                             "action_id"))
    assert m[0, t] == 0 and m[0, g] == 1 and m[0, v] == 300 and m[0, i] == 6  # loan_car
    assert m[1, v] == 120 and m[1, i] == 0
    assert m[2, t] == 1 and m[2, v] == 7.5  # `action_type` attribute name also accepted
    assert math.isnan(m[3, i])  # an id the model never saw
    assert m[3, v] == 0  # value None -> default 0
    customer_cols = [c for c in range(len(schema.features)) if c not in (t, g, v, i)]
    np.testing.assert_array_equal(m[:, customer_cols], np.tile(row[customer_cols], (5, 1)))
    np.testing.assert_array_equal(m[0], m[4])


def test_encode_writes_into_preallocated_out(schema: FeatureSchema, encoder: RowEncoder) -> None:
    row = encoder.customer_row(encode_batch_values(schema, {}), encode_realtime_values(schema, {}),
                               {"channel": "CHAT"})
    out = np.full((8, len(schema.features)), -1.0, dtype=np.float32)
    got = encoder.encode(row, np.array([2, 0]), out=out)
    assert np.shares_memory(got, out)
    assert got.shape == (2, len(schema.features))
    np.testing.assert_array_equal(got, encoder.encode(row, np.array([2, 0])))
    assert (out[2:] == -1.0).all()  # rows past N untouched


def test_encode_rejects_bad_inputs(schema: FeatureSchema, encoder: RowEncoder) -> None:
    row = np.zeros(len(schema.features), dtype=np.float32)
    with pytest.raises(IndexError, match="index 4 out of range"):
        encoder.encode(row, np.array([0, 4]))
    with pytest.raises(ValueError, match="out must be float32"):
        encoder.encode(row, np.array([0, 1]), out=np.empty((1, len(schema.features)), np.float32))
    with pytest.raises(ValueError, match="batch vector"):
        encoder.customer_row(np.zeros(3, np.float32), np.zeros(6, np.float32), {})
    assert encoder.encode(row, np.array([], dtype=np.intp)).shape == (0, len(schema.features))


def test_training_and_serving_rows_are_byte_identical(
    schema: FeatureSchema, encoder: RowEncoder
) -> None:
    records: list[dict[str, object]] = [
        {**CUSTOMER, "action_id": "loan_car"},
        {"age": "61", "segment": "vip", "channel": "CALL_CENTRE", "cart_value": "12.5",
         "action_id": "brand_new_thing"},
        {"segment": "unknown-seg", "income": float("nan"), "action_id": 3},
    ]
    training = encode_rows(schema, encoder, records)

    serving = []
    for rec in records:
        # Serving path: the batch vector has been through the packed Redis value and the
        # realtime values through their string form in the hash.
        stored = unpack(schema, pack(schema, rec, ts_ms=1_700_000_000_000)).vector
        realtime = encode_realtime_values(
            schema, {k: str(v) for k, v in rec.items() if v is not None}
        )
        row = encoder.customer_row(stored, realtime, rec)
        action = rec["action_id"]
        idx = action if isinstance(action, int) else encoder.action_index(str(action))
        serving.append(encoder.encode(row, np.array([idx]))[0])
    assert training.tobytes() == np.stack(serving).tobytes()


def test_encode_rows_names_a_missing_or_unknown_action(
    schema: FeatureSchema, encoder: RowEncoder
) -> None:
    with pytest.raises(KeyError, match="record 1: no 'action_id'"):
        encode_rows(schema, encoder, [{"action_id": "card_gold"}, {}])
    with pytest.raises(KeyError, match="unknown action id 'nope'"):
        encode_rows(schema, encoder, [{"action_id": "nope"}])
    assert encode_rows(schema, encoder, []).shape == (0, len(schema.features))


def test_action_block_matches_encoded_attributes(encoder: RowEncoder) -> None:
    block = encoder.action_block
    assert block.shape == (4, 4)
    assert block[0, 2] == 120 and block[1, 2] == 300
