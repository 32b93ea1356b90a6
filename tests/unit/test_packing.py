"""Golden tests: the packed feature value and the Redis key names are wire formats."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.packing import (
    HEADER_SIZE,
    PackError,
    SchemaMismatchError,
    pack,
    pack_many,
    packed_size,
    unpack,
)
from features.schema import FeatureSchema
from nba_service.store.keys import features_key, history_key, realtime_key, session_key

GOLDEN_SCHEMA = {
    "name": "golden",
    "features": [
        {"name": "age", "dtype": "int", "source": "batch", "default": 40, "max_age": "400d"},
        {"name": "balance", "dtype": "float", "source": "batch", "default": 0},
        {"name": "segment", "dtype": "categorical", "source": "batch",
         "vocabulary": ["mass", "gold"]},
        {"name": "has_card", "dtype": "bool", "source": "batch", "default": False},
        {"name": "clicks", "dtype": "int", "source": "realtime", "default": 0, "max_age": "30m"},
        {"name": "channel", "dtype": "categorical", "source": "context",
         "vocabulary": ["WEB", "CHAT"]},
    ],
}


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema.from_dict(GOLDEN_SCHEMA)


def test_schema_hash_is_pinned(schema: FeatureSchema) -> None:
    # If this moves, every stored record and every model manifest is invalidated.
    assert schema.hash == "f5eb7690254a2a25"


def test_packed_bytes_are_pinned(schema: FeatureSchema) -> None:
    blob = pack(schema, {"age": 37, "balance": -1.5, "segment": "gold", "has_card": True},
                1_700_000_000_123)
    assert blob.hex() == (
        "4e424131"  # b"NBA1"
        "f5eb7690254a2a25"  # schema hash
        "7b68e5cf8b010000"  # int64 LE 1700000000123
        "00001442"  # 37.0
        "0000c0bf"  # -1.5
        "0000803f"  # gold -> 1.0
        "0000803f"  # True -> 1.0
    )
    assert len(blob) == packed_size(schema) == HEADER_SIZE + 16


def test_missing_values_pack_as_default_or_nan(schema: FeatureSchema) -> None:
    blob = pack(schema, {}, 1)
    assert blob.hex() == (
        "4e424131f5eb7690254a2a25" "0100000000000000" "00002042" "00000000" "0000c07f" "00000000"
    )


def test_unpack_round_trip(schema: FeatureSchema) -> None:
    vec = np.array([1.0, np.nan, 0.0, 1.0], dtype=np.float32)
    rec = unpack(schema, pack(schema, vec, 42))
    assert rec.ts_ms == 42
    assert rec.vector.dtype == np.float32
    assert rec.vector.tobytes() == vec.tobytes()
    rec.vector[0] = 7  # must be a writable copy, not a view of the immutable bytes


@given(st.lists(st.floats(width=32, allow_nan=True), min_size=4, max_size=4),
       st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_pack_unpack_property(values: list[float], ts: int) -> None:
    schema = FeatureSchema.from_dict(GOLDEN_SCHEMA)
    vec = np.array(values, dtype=np.float32)
    rec = unpack(schema, pack(schema, vec, ts))
    assert rec.ts_ms == ts
    assert rec.vector.tobytes() == vec.tobytes()


def test_pack_many_equals_pack(schema: FeatureSchema) -> None:
    rng = np.random.default_rng(1)
    m = rng.normal(size=(5, 4)).astype(np.float32)
    m[2, 1] = math.nan
    rows = pack_many(schema, m, 99)
    assert rows.shape == (5, packed_size(schema))
    for i in range(5):
        assert rows[i].tobytes() == pack(schema, m[i], 99)


def test_unpack_rejects_bad_records(schema: FeatureSchema) -> None:
    good = pack(schema, {}, 5)
    with pytest.raises(PackError, match="magic b'XBA1'"):
        unpack(schema, b"X" + good[1:])
    with pytest.raises(PackError, match="needs 36"):
        unpack(schema, good + b"\0")
    with pytest.raises(PackError, match="shorter than the header"):
        unpack(schema, good[:10])
    other = FeatureSchema.from_dict({**GOLDEN_SCHEMA, "features": GOLDEN_SCHEMA["features"][1:]})
    with pytest.raises(SchemaMismatchError, match="f5eb7690254a2a25"):
        unpack(other, good)
    with pytest.raises(PackError, match="has 4 batch features"):
        pack(schema, np.zeros(3, np.float32), 1)
    with pytest.raises(PackError, match="has 4 batch features"):
        pack_many(schema, np.zeros((2, 5), np.float32), 1)


def test_key_names_are_pinned() -> None:
    assert features_key("123") == "nba:{c:123}:f"
    assert realtime_key("123") == "nba:{c:123}:rt"
    assert history_key("123") == "nba:{c:123}:h"
    assert session_key("abc-9") == "nba:{c:abc-9}:s"


def test_key_rejects_ids_that_break_the_hash_tag() -> None:
    with pytest.raises(ValueError, match="must not contain"):
        features_key("a}b")
    with pytest.raises(ValueError, match="empty"):
        realtime_key("")
