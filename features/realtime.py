"""Freshness and real-time events: the pure logic behind the online store.

A value older than its feature's `max_age` counts as missing: it is imputed with the schema
default and reported as stale, never served as fresh. Batch features are judged by the write
time of their packed record, real-time features by their own per-field write time.

Real-time hash layout (`nba:{c:<id>}:rt`): for each feature `<name>` a field `<name>` holding
the encoded value as a decimal string and a field `<name>:ts` holding its write time in ms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from features.packing import PackedRecord
from features.schema import DType, FeatureSchema, Source

__all__ = ["EVENT_OPS", "EncodedEvent", "Freshness", "ts_field", "validate_events"]

# "add" is an alias of "incr"; all four are implemented by the store's Lua script.
EVENT_OPS = {"set": "set", "incr": "incr", "add": "incr", "max": "max", "min": "min"}
TS_SUFFIX = ":ts"


def ts_field(name: str) -> str:
    """Hash field holding the write time (ms) of a real-time feature."""
    return name + TS_SUFFIX


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    name: str
    op: str  # canonical: set | incr | max | min
    value: str  # encoded value as the decimal string stored in / added to the hash
    max_age_ms: int  # -1: never stale


def validate_events(
    schema: FeatureSchema, events: Sequence[tuple[str, object, str]]
) -> list[EncodedEvent]:
    """Check every event against the schema and encode it; raises ValueError naming the event.

    All events are validated before any is applied, so a bad batch writes nothing.
    """
    out: list[EncodedEvent] = []
    for i, event in enumerate(events):
        try:
            name, raw, op_name = event
        except (TypeError, ValueError):
            raise ValueError(f"event {i}: expected (name, value, op), got {event!r}") from None
        spec = schema.get(name)
        if spec is None:
            raise ValueError(f"event {i}: unknown feature {name!r}")
        if spec.source is not Source.REALTIME:
            raise ValueError(
                f"event {i}: feature {name!r} is a {spec.source.value} feature, "
                "only realtime features take events"
            )
        op = EVENT_OPS.get(str(op_name).lower())
        if op is None:
            raise ValueError(
                f"event {i} ({name!r}): unknown op {op_name!r}, use one of {sorted(EVENT_OPS)}"
            )
        if op != "set" and spec.dtype in (DType.CATEGORICAL, DType.BOOL):
            raise ValueError(
                f"event {i} ({name!r}): op {op!r} needs a numeric feature, "
                f"{name!r} is {spec.dtype.value}"
            )
        value = spec.encode_raw(raw)
        if not math.isfinite(value):
            raise ValueError(
                f"event {i} ({name!r}): value {raw!r} is not a valid {spec.dtype.value}"
                + (f" (vocabulary: {list(spec.vocabulary)})" if spec.vocabulary else "")
            )
        max_age = -1 if spec.max_age_s is None else int(spec.max_age_s * 1000)
        out.append(EncodedEvent(name, op, repr(value), max_age))
    return out


def _max_age_ms(values: Sequence[float | None]) -> np.ndarray:
    return np.array([math.inf if v is None else v * 1000.0 for v in values], dtype=np.float64)


class Freshness:
    """Per-schema precomputed defaults and max ages; turns stored values into served vectors."""

    def __init__(self, schema: FeatureSchema) -> None:
        self.schema = schema
        batch = schema.of(Source.BATCH)
        realtime = schema.of(Source.REALTIME)
        self.batch_names = tuple(f.name for f in batch)
        self.realtime_names = tuple(f.name for f in realtime)
        self.batch_defaults = np.array([f.default_encoded for f in batch], dtype=np.float32)
        self.realtime_defaults = np.array([f.default_encoded for f in realtime], dtype=np.float32)
        self._batch_max_age_ms = _max_age_ms([f.max_age_s for f in batch])
        self._realtime_fields = [
            (f.name.encode(), ts_field(f.name).encode(),
             math.inf if f.max_age_s is None else f.max_age_s * 1000.0)
            for f in realtime
        ]

    def batch(
        self, record: PackedRecord | None, now_ms: int
    ) -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
        """-> (vector with defaults imputed, missing names, stale names)."""
        if record is None:
            return self.batch_defaults.copy(), self.batch_names, ()
        stale = (now_ms - record.ts_ms) > self._batch_max_age_ms
        missing = np.isnan(record.vector) & ~stale
        bad = stale | missing
        if not bad.any():
            return record.vector, (), ()
        vector = np.where(bad, self.batch_defaults, record.vector).astype(np.float32, copy=False)
        names = self.batch_names
        return (
            vector,
            tuple(names[i] for i in np.flatnonzero(missing)),
            tuple(names[i] for i in np.flatnonzero(stale)),
        )

    def realtime(
        self, fields: Mapping[bytes, bytes], now_ms: int
    ) -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """HGETALL of the real-time hash -> (vector, missing, stale, problems)."""
        vector = self.realtime_defaults.copy()
        missing: list[str] = []
        stale: list[str] = []
        problems: list[str] = []
        for i, (name_b, ts_b, max_age_ms) in enumerate(self._realtime_fields):
            name = self.realtime_names[i]
            raw = fields.get(name_b)
            if raw is None:
                missing.append(name)
                continue
            try:
                value = float(raw)
            except ValueError:
                problems.append(f"bad_realtime_value:{name}")
                missing.append(name)
                continue
            if max_age_ms != math.inf:
                ts_raw = fields.get(ts_b)
                try:
                    ts = None if ts_raw is None else int(ts_raw)
                except ValueError:
                    problems.append(f"bad_realtime_ts:{name}")
                    ts = None
                # Without a write time freshness cannot be shown, so the value is not served.
                if ts is None or now_ms - ts > max_age_ms:
                    stale.append(name)
                    continue
            if math.isnan(value):
                missing.append(name)
                continue
            vector[i] = value
        return vector, tuple(missing), tuple(stale), tuple(problems)

    @property
    def realtime_ttl_ms(self) -> int | None:
        """Longest max_age of the real-time features: after it every value would be stale."""
        ages = [m for _, _, m in self._realtime_fields]
        if not ages or any(m == math.inf for m in ages):
            return None
        return int(max(ages))
