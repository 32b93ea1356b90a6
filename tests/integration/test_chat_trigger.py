"""Proactive chat invites end to end: a real server, a real store, a real model, over gRPC."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest
import pytest_asyncio
import redis

from features.schema import FeatureSchema
from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.chat import ChatTrigger, ChatTriggerInput
from nba_service.decide import CatalogHolder, CatalogRuntime
from nba_service.engine.catalog import Catalog
from nba_service.runtime import Runtime
from nba_service.server import NbaServer
from nba_service.store.chat import ChatStore
from nba_service.store.embedded import EmbeddedRedis
from tests.chat_fixtures import write_chat_catalog
from tests.integration.conftest import server_settings

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module")
async def chat_server(
    server_store: EmbeddedRedis, model_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[NbaServer]:
    catalog = write_chat_catalog(tmp_path_factory.mktemp("chat"))
    settings = server_settings(server_store, model_artifact).model_copy(
        update={"catalog": catalog}
    )
    server = NbaServer(settings, Runtime(settings))
    await server.start()
    yield server
    await server.stop(grace=0.5)


@pytest_asyncio.fixture(scope="module")
async def chat_stub(chat_server: NbaServer) -> AsyncIterator[decisioning_pb2_grpc.DecisioningStub]:
    assert chat_server.address is not None
    async with grpc.aio.insecure_channel(chat_server.address.target) as ch:
        yield decisioning_pb2_grpc.DecisioningStub(ch)


@pytest.fixture(autouse=True)
def clean_chat(server_store: EmbeddedRedis) -> Iterator[None]:
    """Every test starts with no capacity reports, holds or sessions of earlier tests."""
    client = redis.Redis.from_url(server_store.url)
    keys = list(client.scan_iter(match="nba:{chat}:*"))
    if keys:
        client.delete(*keys)
    client.close()
    yield


def _session() -> str:
    return "s-" + uuid.uuid4().hex[:12]


def _req(session: str, **kw: object) -> pb.ChatTriggerRequest:
    fields: dict[str, object] = {"page_type": "product", "dwell_time_s": 5.0,
                                 "pages_in_session": 3}
    fields.update(kw)
    return pb.ChatTriggerRequest(session_id=session, **fields)  # type: ignore[arg-type]


async def _report(stub: decisioning_pb2_grpc.DecisioningStub, queue: str, available: int,
                  busy: int = 0) -> int:
    resp = await stub.ReportAgentCapacity(
        pb.AgentCapacityRequest(queue=queue, agents_available=available, agents_busy=busy))
    assert resp.queue == queue
    return int(resp.free_capacity)


async def _answer(stub: decisioning_pb2_grpc.DecisioningStub, resp: pb.ChatTriggerResponse,
                  outcome: int, customer: str, event: str | None = None) -> bool:
    out = await stub.RecordOutcome(pb.RecordOutcomeRequest(
        decision_id=resp.invite_id, action_id=resp.action_id, customer_id=customer,
        outcome=outcome, event_id=event or f"{resp.invite_id}:{outcome}", channel=pb.WEB))
    return bool(out.applied)


async def test_no_capacity_report_means_no_invite_but_a_callback(chat_stub) -> None:
    resp = await chat_stub.EvaluateChatTrigger(_req(_session()))
    assert not resp.show_invite and not resp.invite_id
    assert resp.reason_codes[:2] == ["NO_FREE_AGENT", "CALLBACK_OFFERED"]
    assert "sales:CAPACITY_UNKNOWN" in resp.reason_codes
    assert resp.offer_callback and resp.queue == "sales" and resp.kind == "sales"
    assert resp.decision_id


async def test_busy_agents_mean_no_invite(chat_stub) -> None:
    assert await _report(chat_stub, "sales", 0, busy=4) == 0
    assert await _report(chat_stub, "service", 0, busy=2) == 0
    resp = await chat_stub.EvaluateChatTrigger(_req(_session()))
    assert not resp.show_invite
    assert resp.reason_codes[0] == "NO_FREE_AGENT"
    assert "sales:NO_FREE_AGENT" in resp.reason_codes


async def test_dwell_gate_then_invite_takes_an_agent(chat_stub) -> None:
    assert await _report(chat_stub, "sales", 2) == 3  # 2 agents x 1.5 invites each
    session = _session()
    early = await chat_stub.EvaluateChatTrigger(_req(session, dwell_time_s=0.5))
    assert not early.show_invite and list(early.reason_codes) == ["DWELL_NOT_REACHED"]

    resp = await chat_stub.EvaluateChatTrigger(_req(session))
    assert resp.show_invite, resp.reason_codes
    assert (resp.kind, resp.queue, resp.action_id) == ("sales", "sales", "chat_invite_sales")
    assert resp.invite_id == resp.decision_id
    assert resp.reason_codes[0] == "INVITE"
    assert 0 < resp.propensity < 1
    assert resp.value == pytest.approx(20.0)  # 0.02 * cart_value + 20
    assert resp.score == pytest.approx(resp.propensity * resp.value)  # C = L = 1 on product
    assert resp.treatment.title == "Questions?"
    assert not resp.degraded  # anonymous visitors are not a cold start
    # The invite holds one of the three slots; the same session now has one pending.
    assert await _report(chat_stub, "sales", 2) == 2
    again = await chat_stub.EvaluateChatTrigger(_req(session))
    assert not again.show_invite and list(again.reason_codes) == ["INVITE_PENDING"]


async def test_decline_releases_the_agent_and_starts_the_cooldown(chat_stub) -> None:
    assert await _report(chat_stub, "sales", 2) == 3
    session = _session()
    resp = await chat_stub.EvaluateChatTrigger(_req(session))
    assert resp.show_invite
    assert await _report(chat_stub, "sales", 2) == 2
    visitor = f"visitor-{session}"
    assert await _answer(chat_stub, resp, pb.IMPRESSION, visitor)
    assert await _answer(chat_stub, resp, pb.REJECT, visitor)
    assert not await _answer(chat_stub, resp, pb.REJECT, visitor)  # replayed event_id
    assert await _report(chat_stub, "sales", 2) == 3  # the hold is released
    after = await chat_stub.EvaluateChatTrigger(_req(session, dwell_time_s=50))
    assert not after.show_invite and list(after.reason_codes) == ["DECLINE_COOLDOWN"]


async def test_accept_keeps_the_agent_until_the_next_report(chat_stub) -> None:
    assert await _report(chat_stub, "sales", 1) == 1
    a, b = _session(), _session()
    resp = await chat_stub.EvaluateChatTrigger(_req(a))
    assert resp.show_invite
    assert await _answer(chat_stub, resp, pb.ACCEPT, f"visitor-{a}")
    # The hold became an accepted chat: the only agent is taken until the centre reports.
    blocked = await chat_stub.EvaluateChatTrigger(_req(b))
    assert not blocked.show_invite and "sales:NO_FREE_AGENT" in blocked.reason_codes
    assert await _report(chat_stub, "sales", 1) == 1  # a fresh report counts it as busy
    assert (await chat_stub.EvaluateChatTrigger(_req(b))).show_invite


async def test_at_most_n_invites_per_session(chat_stub) -> None:
    await _report(chat_stub, "sales", 5)
    session = _session()
    for _ in range(2):  # max_invites_per_session: 2
        resp = await chat_stub.EvaluateChatTrigger(_req(session))
        assert resp.show_invite, resp.reason_codes
        assert await _answer(chat_stub, resp, pb.ACCEPT, f"visitor-{session}")
    last = await chat_stub.EvaluateChatTrigger(_req(session))
    assert not last.show_invite and list(last.reason_codes) == ["SESSION_INVITE_LIMIT"]


async def test_errors_lead_to_the_service_queue(chat_stub) -> None:
    await _report(chat_stub, "sales", 3)
    await _report(chat_stub, "service", 1)
    resp = await chat_stub.EvaluateChatTrigger(
        _req(_session(), page_type="account", errors_seen=3))
    assert resp.show_invite, resp.reason_codes
    assert (resp.kind, resp.queue, resp.action_id) == ("service", "service",
                                                      "chat_invite_service")
    # Sales chat is for product pages: its applicability rule removed it.
    assert "sales:RULE_APPLICABILITY" in resp.reason_codes


async def test_known_customer_gets_their_features_and_contact_policy(
    chat_stub, demo_customers: list[dict[str, object]]
) -> None:
    await _report(chat_stub, "sales", 5)
    customer = next(str(c["customer_id"]) for c in demo_customers
                    if not c.get("open_complaints"))
    resp = await chat_stub.EvaluateChatTrigger(_req(_session(), customer_id=customer))
    assert resp.show_invite, resp.reason_codes
    assert not resp.degraded, resp.degraded_reasons
    assert await _answer(chat_stub, resp, pb.IMPRESSION, customer)
    assert await _answer(chat_stub, resp, pb.REJECT, customer)
    # A new session of the same customer: chat_invite_sales allows 1 impression a day.
    later = await chat_stub.EvaluateChatTrigger(_req(_session(), customer_id=customer))
    assert not later.show_invite
    assert "sales:CONTACT_POLICY" in later.reason_codes


async def test_unknown_customer_is_a_degraded_cold_start(chat_stub) -> None:
    await _report(chat_stub, "sales", 5)
    resp = await chat_stub.EvaluateChatTrigger(_req(_session(), customer_id="nobody-here"))
    assert resp.show_invite
    assert "cold_start:unknown_customer" in resp.degraded_reasons


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ChatTriggerRequest(page_type="product"), "session_id"),
        (pb.ChatTriggerRequest(session_id="s1", dwell_time_s=float("nan")), "dwell_time_s"),
        (pb.ChatTriggerRequest(session_id="s1", cart_value=-1), "cart_value"),
        (pb.ChatTriggerRequest(session_id="s{1}"), "session_id"),
        (pb.ChatTriggerRequest(session_id="s1", context={"k": pb.Value()}), "context"),
    ],
)
async def test_bad_trigger_requests_name_the_field(chat_stub, request_, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await chat_stub.EvaluateChatTrigger(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (err.value.details() or "")


async def test_capacity_report_errors(chat_stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await chat_stub.ReportAgentCapacity(pb.AgentCapacityRequest(queue="billing"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "billing" in (err.value.details() or "") and "sales" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await chat_stub.ReportAgentCapacity(pb.AgentCapacityRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "queue" in (err.value.details() or "")


async def test_outcome_for_an_invite_must_name_its_action(chat_stub) -> None:
    await _report(chat_stub, "sales", 5)
    session = _session()
    resp = await chat_stub.EvaluateChatTrigger(_req(session))
    assert resp.show_invite
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await chat_stub.RecordOutcome(pb.RecordOutcomeRequest(
            decision_id=resp.invite_id, action_id="chat_invite_service",
            customer_id=f"visitor-{session}", outcome=pb.REJECT, event_id="x1",
            channel=pb.WEB))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "invite" in (err.value.details() or "")


async def test_business_hours_close_the_chat(
    chat_server: NbaServer, demo_catalog: Catalog, demo_schema: FeatureSchema
) -> None:
    # The demo catalog itself: Europe/London, weekdays 08:00-20:00, closed on Sundays.
    assert demo_catalog.chat is not None and not demo_catalog.chat.business_hours.always_open
    live = chat_server.runtime.chat
    assert live is not None
    trigger = ChatTrigger(demo_schema, live.online, CatalogHolder(
        CatalogRuntime.build(demo_catalog, demo_schema)), chat_server.runtime.models, live.store)
    london = ZoneInfo("Europe/London")
    sunday = int(datetime(2026, 3, 8, 12, 0, tzinfo=london).timestamp() * 1000)
    monday_night = int(datetime(2026, 3, 9, 21, 30, tzinfo=london).timestamp() * 1000)
    monday = int(datetime(2026, 3, 9, 12, 0, tzinfo=london).timestamp() * 1000)
    inp = ChatTriggerInput(session_id=_session(), page_type="product", dwell_time_s=1.0,
                           pages_in_session=3)
    for closed in (sunday, monday_night):
        res = await trigger.evaluate(inp, now_ms=closed)
        assert res.reason_codes == ["OUTSIDE_BUSINESS_HOURS"] and not res.show_invite
    # Open on a Monday noon: the next gate (the demo's 30 s product-page dwell) answers.
    res = await trigger.evaluate(inp, now_ms=monday)
    assert res.reason_codes == ["DWELL_NOT_REACHED"]


# --------------------------------------------------------------- the store's scripts, directly
# Explicit clocks (now_ms) make hold expiry and stale reports testable without waiting.

T0 = 1_800_000_000_000


async def _invite(store: ChatStore, session: str, invite: str, now: int, *,
                  hold_s: float = 60, max_age: float | None = 300) -> tuple[bool, str, int]:
    return await store.invite(
        session_id=session, invite_id=invite, queue="q", action="chat_invite_sales",
        customer_id="", now_ms=now, hold_s=hold_s, max_invites=3, cooldown_s=600, ratio=1.0,
        session_ttl_s=3600, capacity_max_age_s=max_age)


async def test_holds_expire_and_release_their_agent(redis_async) -> None:
    store = ChatStore(redis_async)
    assert await store.report_capacity("q", 2, 0, 1.0, T0) == 2
    assert await _invite(store, "a", "i1", T0) == (True, "", 1)
    assert await _invite(store, "b", "i2", T0 + 1) == (True, "", 0)
    assert await _invite(store, "c", "i3", T0 + 2) == (False, "NO_FREE_AGENT", 0)
    # The read pipeline agrees: expired holds are not counted even before a script prunes.
    replies = await store.read("c", ChatStore.read_commands("c", ["q"], T0 + 60_001))
    _, caps = ChatStore.parse_replies(replies, ["q"])
    assert caps["q"].holds == 0
    assert await _invite(store, "c", "i3", T0 + 60_001) == (True, "", 1)


async def test_stale_capacity_reports_count_as_unknown(redis_async) -> None:
    store = ChatStore(redis_async)
    await store.report_capacity("q", 5, 0, 1.0, T0)
    assert await _invite(store, "a", "i1", T0 + 301_000) == (False, "CAPACITY_UNKNOWN", 0)
    assert (await _invite(store, "a", "i1", T0 + 301_000, max_age=None))[0]


async def test_settle_is_once_and_checks_the_action(redis_async) -> None:
    store = ChatStore(redis_async)
    await store.report_capacity("q", 1, 0, 1.0, T0)
    assert (await _invite(store, "a", "i1", T0))[0]
    assert await store.settle("i1", "q", "chat_invite_service", False, T0 + 5, 300) == (
        "action_mismatch")
    assert await store.settle("i1", "q", "chat_invite_sales", False, T0 + 5, 300) == "declined"
    # A late accept of a declined invite changes nothing.
    assert await store.settle("i1", "q", "chat_invite_sales", True, T0 + 6, 300) == "declined"
    assert await store.settle("nope", "q", "chat_invite_sales", True, T0 + 6, 300) == "unknown"
    assert await store.status("i1", "chat_invite_sales") == "declined"
    session, caps = ChatStore.parse_replies(
        await store.read("a", ChatStore.read_commands("a", ["q"], T0 + 7)), ["q"])
    assert session.declined_ms == T0 + 5 and session.pending is None and session.invites == 1
    assert caps["q"].holds == 0 and caps["q"].taken == 0


async def test_concurrent_invites_never_overbook(redis_async) -> None:
    store = ChatStore(redis_async)
    assert await store.report_capacity("q", 3, 0, 1.0, T0) == 3
    results = await asyncio.gather(*(_invite(store, f"s{i}", f"i{i}", T0) for i in range(20)))
    assert sum(ok for ok, _, _ in results) == 3
    assert {why for ok, why, _ in results if not ok} == {"NO_FREE_AGENT"}


async def test_store_outage_means_no_invite_not_an_error(
    chat_server: NbaServer, demo_schema: FeatureSchema
) -> None:
    import socket

    import redis.asyncio as aioredis

    from nba_service.store.online import OnlineStore

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
    try:
        assert chat_server.runtime.catalogs is not None
        trigger = ChatTrigger(demo_schema, OnlineStore(client, demo_schema),
                              chat_server.runtime.catalogs, chat_server.runtime.models,
                              ChatStore(client))
        for customer in ("", "C0000001"):
            res = await trigger.evaluate(ChatTriggerInput(
                session_id=_session(), customer_id=customer, page_type="product",
                dwell_time_s=9, pages_in_session=3))
            assert not res.show_invite
            assert res.reason_codes == ["STORE_UNAVAILABLE"]
            assert res.degraded_reasons == ["store_unavailable"]
    finally:
        await client.aclose()


async def test_anonymous_chat_read_is_guarded_and_owner_checked(
    chat_server: NbaServer, demo_schema: FeatureSchema, server_store: EmbeddedRedis,
) -> None:
    import redis.asyncio as aioredis

    from nba_service.reliability.breaker import BreakerConfig, CircuitBreaker
    from nba_service.reliability.store_guard import GuardedStore, StoreGuard
    from nba_service.store.online import StoreIntegrityError

    async def owner_checks() -> int:  # the ownership echo runs once per owned read
        stats = await client.info("commandstats")
        return int(stats.get("cmdstat_eval_ro", {}).get("calls", 0))

    client = aioredis.Redis.from_url(server_store.url, max_connections=1)
    breaker = CircuitBreaker(BreakerConfig(min_calls=1, open_s=3600))
    store = GuardedStore(client, demo_schema, StoreGuard(breaker, cap_s=1.0))
    assert chat_server.runtime.catalogs is not None
    trigger = ChatTrigger(demo_schema, store, chat_server.runtime.catalogs,
                          chat_server.runtime.models, ChatStore(client))
    inp = ChatTriggerInput(session_id=_session(), page_type="product", dwell_time_s=9,
                           pages_in_session=3)
    try:
        before = await owner_checks()
        assert (await trigger.evaluate(inp)).reason_codes != ["STORE_UNAVAILABLE"]
        assert await owner_checks() == before + 1  # the visitor's read is owner-checked
        # An open breaker answers without a round trip, for visitors as for customers.
        breaker.record_failure()
        res = await trigger.evaluate(inp)
        assert res.reason_codes == ["STORE_UNAVAILABLE"] and not res.show_invite
        assert await owner_checks() == before + 1
        # A connection back in the pool with a reply still pending: the shifted replies fail
        # the session read's ownership check instead of being read as this session's state.
        conn = await client.connection_pool.get_connection()
        await conn.send_command("BLPOP", "nba:{chat}:nothing", "1")
        await client.connection_pool.release(conn)
        with pytest.raises(StoreIntegrityError):
            await ChatStore(client).read(inp.session_id, [["HGETALL", "nba:{chat}:s:x"]])
    finally:
        await client.aclose()
