"""Cross-channel continuity: a complaint raised in chat changes what the call centre is shown."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from features.schema import FeatureSchema
from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.client import build_request
from nba_service.store.embedded import EmbeddedRedis
from nba_service.store.keys import realtime_key
from nba_service.store.online import OnlineStore

pytestmark = pytest.mark.integration


async def test_a_chat_complaint_puts_service_before_sales_in_the_call_centre(
    stub: decisioning_pb2_grpc.DecisioningStub, server_store: EmbeddedRedis,
    demo_customers: list[dict[str, object]], demo_schema: FeatureSchema,
) -> None:
    # A customer without complaints who is offered a product in the call centre today.
    customer = None
    for c in demo_customers:
        if c.get("open_complaints"):
            continue
        resp = await stub.Decide(build_request(str(c["customer_id"]), "CALL_CENTRE", limit=3),
                                 timeout=5)
        if any(r.action_type == pb.OFFER for r in resp.recommendations):
            customer, before = c, resp
            break
    assert customer is not None, "no demo customer gets an offer in the call centre"
    cid = str(customer["customer_id"])
    assert "service_resolve_complaint" not in [r.action_id for r in before.recommendations]

    # In the chat: the complaint is logged as a real-time event on the CHAT session, and the
    # complaint system raises the customer's open-complaint count (a feature update).
    ev = pb.IngestEventsRequest(customer_id=cid)
    ev.events.add(feature="hours_since_complaint", value=pb.Value(number_value=0.0))
    assert (await stub.IngestEvents(ev, timeout=5)).applied == 1
    client = aioredis.Redis.from_url(server_store.url)
    try:
        await OnlineStore(client, demo_schema).write_customer(
            cid, {**customer, "open_complaints": 1}, ts_ms=time.time_ns() // 1_000_000)
        assert await client.hget(realtime_key(cid), "hours_since_complaint") == b"0.0"
    finally:
        await client.aclose()

    after = await stub.Decide(build_request(cid, "CALL_CENTRE", limit=3, explain=True),
                              timeout=5)
    # Mandatory notices keep their place at the top; the complaint comes first after them.
    ranked = [r.action_id for r in after.recommendations if "MANDATORY" not in r.reason_codes]
    assert ranked[0] == "service_resolve_complaint"
    assert all(r.action_type != pb.OFFER for r in after.recommendations)
    fate = {c.action_id: c.removed_by for c in after.explanation.candidates}
    offered_before = [r.action_id for r in before.recommendations if r.action_type == pb.OFFER]
    assert all(fate[a] for a in offered_before)  # every offer shown before is now removed
    assert "SERVICE_BEFORE_SALES" in {fate[a] for a in offered_before}
