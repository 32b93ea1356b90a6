"""Thin transport layer: validates protobuf requests, converts them, and nothing else."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from nba_service import chat_api, stream_api
from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.errors import InvalidArgument
from nba_service.types import Decision, DecisionRequest, OutcomeEvent

if TYPE_CHECKING:
    from nba_service.runtime import Runtime
from nba_service.settings import Settings

_ACTION_TYPES = {
    "offer": pb.OFFER,
    "service": pb.SERVICE,
    "retention": pb.RETENTION,
    "chat_invite": pb.CHAT_INVITE,
    "info": pb.INFO,
}
_OUTCOMES = {v: k.lower() for k, v in pb.Outcome.items() if v != 0}
_OPS = {
    pb.Event.OP_UNSPECIFIED: "set",
    pb.Event.SET: "set",
    pb.Event.ADD: "add",
    pb.Event.MAX: "max",
}


def _value(v: pb.Value, field: str) -> object:
    kind = v.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument(
            field, "value has none of string_value, number_value, bool_value, int_value"
        )
    out = getattr(v, kind)
    if kind == "number_value" and not math.isfinite(out):
        raise InvalidArgument(field, "number_value must be finite")
    return out


class Validator:
    """Limits are checked here, before any I/O happens."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings

    def string(self, field: str, value: str, *, required: bool = False) -> str:
        if required and not value:
            raise InvalidArgument(field, "is required")
        if len(value) > self.s.max_string_len:
            raise InvalidArgument(field, f"is longer than {self.s.max_string_len} characters")
        if any(c in value for c in "{}\n\r\x00"):
            # Braces would break the Redis hash tag that keeps one customer's keys in one slot.
            raise InvalidArgument(field, "must not contain braces, newlines or NUL")
        return value

    def channel(self, value: int, field: str = "channel") -> str:
        if value == pb.CHANNEL_UNSPECIFIED or value not in pb.Channel.values():
            raise InvalidArgument(
                field, f"unknown channel {value}; use one of {list(pb.Channel.keys())[1:]}"
            )
        return pb.Channel.Name(value)

    def decide(self, r: pb.DecideRequest) -> DecisionRequest:
        customer_id = self.string("customer_id", r.customer_id, required=True)
        channel = self.channel(r.channel)
        placement = self.string("placement", r.placement)
        if len(r.context) > self.s.max_context_entries:
            raise InvalidArgument("context", f"has more than {self.s.max_context_entries} entries")
        context: dict[str, object] = {}
        for key, value in r.context.items():
            self.string("context key", key, required=True)
            v = _value(value, f"context[{key!r}]")
            if isinstance(v, str):
                self.string(f"context[{key!r}]", v)
            context[key] = v
        if r.limit > self.s.max_limit:
            raise InvalidArgument("limit", f"must be at most {self.s.max_limit}")
        return DecisionRequest(
            customer_id=customer_id,
            channel=channel,
            placement=placement,
            context=context,
            limit=r.limit or self.s.default_limit,
            request_id=self.string("request_id", r.request_id),
            explain=r.explain,
        )

    def outcome(self, r: pb.RecordOutcomeRequest) -> OutcomeEvent:
        if r.outcome not in _OUTCOMES:
            raise InvalidArgument(
                "outcome", f"unknown outcome {r.outcome}; use one of {list(pb.Outcome.keys())[1:]}"
            )
        if not math.isfinite(r.value):
            raise InvalidArgument("value", "must be finite")
        ts_ms = r.timestamp.ToMilliseconds() if r.HasField("timestamp") else None
        return OutcomeEvent(
            customer_id=self.string("customer_id", r.customer_id, required=True),
            decision_id=self.string("decision_id", r.decision_id),
            action_id=self.string("action_id", r.action_id, required=True),
            outcome=_OUTCOMES[r.outcome],
            event_id=self.string("event_id", r.event_id, required=True),
            value=r.value,
            ts_ms=ts_ms,
            channel=self.channel(r.channel) if r.channel else None,
        )

    def events(
        self, r: pb.IngestEventsRequest
    ) -> tuple[str, list[tuple[str, object, str]], int | None]:
        customer_id = self.string("customer_id", r.customer_id, required=True)
        if not r.events:
            raise InvalidArgument("events", "is empty")
        if len(r.events) > self.s.max_events_per_request:
            raise InvalidArgument(
                "events", f"has more than {self.s.max_events_per_request} entries"
            )
        events = []
        for i, e in enumerate(r.events):
            name = self.string(f"events[{i}].feature", e.feature, required=True)
            if e.op not in _OPS:
                raise InvalidArgument(f"events[{i}].op", f"unknown op {e.op}")
            events.append((name, _value(e.value, f"events[{i}].value"), _OPS[e.op]))
        ts_ms = r.timestamp.ToMilliseconds() if r.HasField("timestamp") else None
        return customer_id, events, ts_ms


def to_response(d: Decision) -> pb.DecideResponse:
    resp = pb.DecideResponse(
        decision_id=d.decision_id,
        model_version=d.model_version,
        catalog_version=d.catalog_version,
        degraded=bool(d.degraded_reasons),
        degraded_reasons=d.degraded_reasons,
        request_id=d.request_id,
    )
    recs = resp.recommendations
    for a in d.actions:
        t = a.treatment
        rec = recs.add(
            action_id=a.action_id,
            action_type=_ACTION_TYPES.get(a.action_type, pb.ACTION_TYPE_UNSPECIFIED),
            group=a.group,
            rank=a.rank,
            priority=a.priority,
            propensity=a.propensity,
            value=a.value,
            context_weight=a.context_weight,
            lever=a.lever,
            reason_codes=a.reason_codes,
            selection_probability=a.selection_probability,
        )
        # Filled in place: a pb.Treatment(...) argument would be built and then copied.
        tr = rec.treatment
        tr.title = t.get("title", "")
        tr.text = t.get("text", "")
        tr.call_to_action = t.get("cta", "")
        tr.url = t.get("url", "")
    if d.explanation is not None:
        ex = resp.explanation
        for c in d.explanation.candidates:
            ex.candidates.add(**c)
        for action_id, top in d.explanation.contributions.items():
            ac = ex.contributions.add(action_id=action_id)
            for feature, contribution in top:
                ac.top.add(feature=feature, contribution=contribution)
    timing, tm = d.timing, resp.timing
    tm.store_us = timing.get("store", 0)
    tm.encode_us = timing.get("encode", 0)
    tm.score_us = timing.get("score", 0)
    tm.rules_us = timing.get("rules", 0)
    return resp


class DecisioningServicer(decisioning_pb2_grpc.DecisioningServicer):
    def __init__(self, runtime: Runtime, settings: Settings) -> None:
        self.runtime = runtime
        self.validate = Validator(settings)

    async def Decide(
        self, request: pb.DecideRequest, context: grpc.aio.ServicerContext
    ) -> pb.DecideResponse:
        t0 = time.perf_counter_ns()
        decision = await self.runtime.decide(self.validate.decide(request))
        t1 = time.perf_counter_ns()
        resp = to_response(decision)
        t2 = time.perf_counter_ns()
        # Total covers validation and conversion too: what this process spent on the request.
        resp.timing.serialize_us = (t2 - t1) // 1000
        resp.timing.total_us = (t2 - t0) // 1000
        return resp

    async def RecordOutcome(
        self, request: pb.RecordOutcomeRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordOutcomeResponse:
        applied = await self.runtime.record_outcome(self.validate.outcome(request))
        return pb.RecordOutcomeResponse(applied=applied)

    async def IngestEvents(
        self, request: pb.IngestEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.IngestEventsResponse:
        customer_id, events, ts_ms = self.validate.events(request)
        applied = await self.runtime.ingest_events(customer_id, events, ts_ms)
        return pb.IngestEventsResponse(applied=applied)

    async def DecideStream(  # type: ignore[override]
        self, request_iterator: AsyncIterator[pb.DecideRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.DecideResponse]:
        async for resp in stream_api.decide_stream(
            self.runtime, self.validate, request_iterator, context
        ):
            yield resp

    async def EvaluateChatTrigger(
        self, request: pb.ChatTriggerRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChatTriggerResponse:
        return await chat_api.evaluate(self.runtime, self.validate, request)

    async def ReportAgentCapacity(
        self, request: pb.AgentCapacityRequest, context: grpc.aio.ServicerContext
    ) -> pb.AgentCapacityResponse:
        return await chat_api.report_capacity(self.runtime, self.validate, request)
