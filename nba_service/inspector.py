"""The decision inspector: one customer's features (with staleness), an explained decision and
their recent contact history, for agents and analysts asking "why did they get this?".

Not on the hot path: it reads the raw feature records itself (to show ages and what was
imputed) and then runs the regular decision with `explain`, so what it shows is exactly what
Decide would answer. The decision is not written to the decision log: nobody was shown it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from features.packing import PackError, unpack
from features.realtime import ts_field
from features.schema import DType, FeatureSchema, FeatureSpec, Source
from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service.store.keys import features_key, history_key, realtime_key
from nba_service.store.online import read_owned

if TYPE_CHECKING:
    from nba_service.decide import Decider
    from nba_service.servicer import Validator

MAX_HISTORY = 100


def display(spec: FeatureSpec, encoded: float) -> str:
    """An encoded feature value as people read it (category names, true/false)."""
    if math.isnan(encoded):
        return ""
    if spec.dtype is DType.CATEGORICAL:
        i = int(encoded)
        return spec.vocabulary[i] if 0 <= i < len(spec.vocabulary) else f"#{i}"
    if spec.dtype is DType.BOOL:
        return "true" if encoded else "false"
    if spec.dtype is DType.INT:
        return str(int(encoded))
    return f"{encoded:.6g}"


def feature_values(
    schema: FeatureSchema,
    blob: bytes | None,
    rt_fields: Mapping[bytes, bytes],
    context: Mapping[str, object],
    now_ms: int,
) -> list[pb.FeatureValue]:
    """Every non-action feature: the value a decision would use, missing / stale and its age."""
    out: list[pb.FeatureValue] = []
    record = None
    if blob is not None:
        try:
            record = unpack(schema, blob)
        except PackError:
            record = None
    batch = schema.of(Source.BATCH)
    for i, spec in enumerate(batch):
        raw = float(record.vector[i]) if record is not None else math.nan
        age = (now_ms - record.ts_ms) / 1000 if record is not None else -1.0
        stale = record is not None and spec.max_age_s is not None and age > spec.max_age_s
        missing = math.isnan(raw)
        served = spec.default_encoded if (missing or stale) else raw
        out.append(pb.FeatureValue(name=spec.name, source="batch", value=display(spec, served),
                                   missing=missing, stale=stale, age_s=age))
    for spec in schema.of(Source.REALTIME):
        value_b = rt_fields.get(spec.name.encode())
        ts_b = rt_fields.get(ts_field(spec.name).encode())
        try:
            raw = float(value_b) if value_b is not None else math.nan
        except ValueError:
            raw = math.nan
        try:
            age = (now_ms - int(ts_b)) / 1000 if ts_b is not None else -1.0
        except ValueError:
            age = -1.0
        missing = math.isnan(raw)
        # Without a write time a value is not served (docs/feature-store.md), so it is stale.
        stale = not missing and spec.max_age_s is not None and (age < 0 or age > spec.max_age_s)
        served = spec.default_encoded if (missing or stale) else raw
        out.append(pb.FeatureValue(name=spec.name, source="realtime",
                                   value=display(spec, served), missing=missing, stale=stale,
                                   age_s=age))
    for spec in schema.of(Source.CONTEXT):
        raw_ctx = context.get(spec.name)
        encoded = spec.encode(raw_ctx)
        out.append(pb.FeatureValue(name=spec.name, source="context",
                                   value=display(spec, encoded), missing=raw_ctx is None,
                                   stale=False, age_s=-1.0))
    return out


def contact_history(raw: Mapping[bytes, bytes]) -> list[pb.ContactRecord]:
    """Outcome counters `<action>|<outcome>|n` / `|t` / `|c` (count, latest time, latest
    channel) of the history hash, newest first."""
    counts: dict[tuple[str, str], list[int]] = {}
    channels: dict[tuple[str, str], str] = {}
    for key, value in raw.items():
        parts = key.decode(errors="replace").split("|")
        if len(parts) != 3 or parts[0].startswith("#") or parts[2] not in ("n", "t", "c"):
            continue
        if parts[2] == "c":
            channels[(parts[0], parts[1])] = value.decode(errors="replace")
            continue
        try:
            number = int(float(value))
        except ValueError:
            continue
        entry = counts.setdefault((parts[0], parts[1]), [0, 0])
        entry[0 if parts[2] == "n" else 1] = number
    records = [
        pb.ContactRecord(action_id=a, outcome=o.upper(), count=max(n, 0), last_ms=t,
                         channel=channels.get((a, o), ""))
        for (a, o), (n, t) in counts.items()
    ]
    records.sort(key=lambda r: (-r.last_ms, r.action_id, r.outcome))
    return records[:MAX_HISTORY]


class Inspector:
    def __init__(self, schema: FeatureSchema, client: object, decider: Decider) -> None:
        self.schema = schema
        self.client = client
        self.decider = decider

    async def inspect(self, v: Validator, r: pb.InspectRequest) -> pb.InspectResponse:
        from nba_service.servicer import to_response

        # Decide's validation, so the inspector accepts exactly what Decide accepts.
        req = v.decide(pb.DecideRequest(
            customer_id=r.customer_id, channel=r.channel, placement=r.placement,
            context=r.context, explain=True,
        ))
        now_ms = time.time_ns() // 1_000_000
        cid = req.customer_id
        fkey = features_key(cid)

        def read() -> Awaitable[list[Any]]:
            return read_owned(self.client, fkey, [
                ("GET", fkey), ("HGETALL", realtime_key(cid)), ("HGETALL", history_key(cid)),
            ], what=f"customer {cid!r}")

        # The decision's breaker and deadline budget guard this read too.
        blob, rt_fields, history = await self.decider.store.guarded(read)
        decision = await self.decider.decide(req)
        context = dict(req.context)
        context["channel"] = req.channel
        return pb.InspectResponse(
            decision=to_response(decision),
            features=feature_values(self.schema, blob, rt_fields or {}, context, now_ms),
            history=contact_history(history or {}),
        )
