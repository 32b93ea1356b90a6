"""Protobuf <-> plain types for the chat RPCs: validation (limits before any I/O) and conversion.

The servicer's two chat handlers delegate here so the gRPC and HTTP transports share it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service.chat import ChatTriggerInput, ChatTriggerResult
from nba_service.errors import FailedPrecondition, InvalidArgument

if TYPE_CHECKING:
    from nba_service.chat import ChatTrigger
    from nba_service.runtime import Runtime
    from nba_service.servicer import Validator


def _finite_non_negative(field: str, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(field, "must be a finite number >= 0")
    return value


def chat_input(v: Validator, r: pb.ChatTriggerRequest) -> ChatTriggerInput:
    session_id = v.string("session_id", r.session_id, required=True)
    customer_id = v.string("customer_id", r.customer_id)
    # The context map gets exactly Decide's checks (entry count, key and value limits) by
    # validating it as the context of a decision request.
    context = v.decide(
        pb.DecideRequest(customer_id=session_id, channel=pb.WEB, context=r.context)
    ).context
    return ChatTriggerInput(
        session_id=session_id,
        customer_id=customer_id,
        page_type=v.string("page_type", r.page_type),
        dwell_time_s=_finite_non_negative("dwell_time_s", r.dwell_time_s),
        pages_in_session=r.pages_in_session,
        cart_value=_finite_non_negative("cart_value", r.cart_value),
        errors_seen=r.errors_seen,
        returning_visitor=r.returning_visitor,
        context=context,
        request_id=v.string("request_id", r.request_id),
    )


def to_chat_response(res: ChatTriggerResult) -> pb.ChatTriggerResponse:
    t = res.treatment
    resp = pb.ChatTriggerResponse(
        show_invite=res.show_invite,
        kind=res.kind,
        queue=res.queue,
        action_id=res.action_id,
        invite_id=res.invite_id,
        score=res.score,
        propensity=res.propensity,
        value=res.value,
        reason_codes=res.reason_codes,
        offer_callback=res.offer_callback,
        degraded=bool(res.degraded_reasons),
        degraded_reasons=res.degraded_reasons,
        decision_id=res.decision_id,
    )
    if t:
        resp.treatment.CopyFrom(pb.Treatment(
            title=t.get("title", ""), text=t.get("text", ""),
            call_to_action=t.get("cta", ""), url=t.get("url", ""),
        ))
    return resp


def _chat(runtime: Runtime) -> ChatTrigger:
    chat = getattr(runtime, "chat", None)
    if chat is None:
        raise FailedPrecondition("chat is not available: the service is not started")
    return chat  # type: ignore[no-any-return]


async def evaluate(
    runtime: Runtime, v: Validator, request: pb.ChatTriggerRequest
) -> pb.ChatTriggerResponse:
    inp = chat_input(v, request)
    return to_chat_response(await _chat(runtime).evaluate(inp))


async def report_capacity(
    runtime: Runtime, v: Validator, request: pb.AgentCapacityRequest
) -> pb.AgentCapacityResponse:
    queue = v.string("queue", request.queue, required=True)
    free = await _chat(runtime).report_capacity(
        queue, request.agents_available, request.agents_busy
    )
    return pb.AgentCapacityResponse(queue=queue, free_capacity=free)
