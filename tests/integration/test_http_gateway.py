"""The HTTP/JSON gateway over a real server: same validation and answers as gRPC, CORS, health."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio

from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.runtime import Runtime
from nba_service.server import NbaServer
from nba_service.store.embedded import EmbeddedRedis
from tests.chat_fixtures import write_chat_catalog
from tests.integration.conftest import server_settings

pytestmark = pytest.mark.integration

ORIGIN = "https://shop.example"


@pytest_asyncio.fixture(scope="module")
async def http_server(
    server_store: EmbeddedRedis, model_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[NbaServer]:
    catalog = write_chat_catalog(tmp_path_factory.mktemp("http"))
    settings = server_settings(server_store, model_artifact).model_copy(
        update={"catalog": catalog, "http_cors_origins": [ORIGIN]}
    )
    server = NbaServer(settings, Runtime(settings))
    await server.start()
    yield server
    await server.stop(grace=0.5)


@pytest_asyncio.fixture(scope="module")
async def http(http_server: NbaServer) -> AsyncIterator[aiohttp.ClientSession]:
    assert http_server.http is not None and http_server.http.port
    async with aiohttp.ClientSession(base_url=http_server.http.url) as session:
        yield session


async def _post(http: aiohttp.ClientSession, path: str, body: Any,
                **kw: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, str | bytes) else None
    async with http.post(path, json=None if data is not None else body, data=data, **kw) as r:
        return r.status, await r.json()


async def test_healthz_and_ports(http_server: NbaServer, http: aiohttp.ClientSession) -> None:
    assert http_server.address is not None and http_server.http is not None
    # The gRPC port is ephemeral here, so the HTTP one is too (no fixed 8080 in tests).
    assert http_server.http.port not in (0, 8080, http_server.address.port)
    async with http.get("/healthz") as r:
        assert r.status == 200 and (await r.json()) == {"status": "SERVING"}


async def test_decide_over_json_matches_grpc(
    http: aiohttp.ClientSession, demo_customers: list[dict[str, object]],
    http_server: NbaServer,
) -> None:
    cid = str(demo_customers[0]["customer_id"])
    body = {"customerId": cid, "channel": "WEB", "placement": "hero", "limit": 2,
            "context": {"page_type": {"stringValue": "product"},
                        "hour_of_day": {"intValue": "14"}},
            "requestId": "r-1", "explain": True}
    status, resp = await _post(http, "/v1/decide", body)
    assert status == 200, resp
    assert resp["requestId"] == "r-1" and resp["decisionId"]
    assert 1 <= len(resp["recommendations"]) <= 2
    assert resp["recommendations"][0]["rank"] == 1
    assert resp["explanation"]["candidates"]
    # The same request over gRPC serves the same actions.
    assert http_server.address is not None
    async with grpc.aio.insecure_channel(http_server.address.target) as ch:
        g = await decisioning_pb2_grpc.DecisioningStub(ch).Decide(pb.DecideRequest(
            customer_id=cid, channel=pb.WEB, placement="hero", limit=2,
            context={"page_type": pb.Value(string_value="product"),
                     "hour_of_day": pb.Value(int_value=14)}))
    assert [r.action_id for r in g.recommendations] == [
        r["actionId"] for r in resp["recommendations"]]


@pytest.mark.parametrize(
    ("body", "status", "code", "needle"),
    [
        ("{not json", 400, "INVALID_ARGUMENT", "body"),
        ({"customerId": "c1", "channel": "WEB", "bogus": 1}, 400, "INVALID_ARGUMENT", "bogus"),
        ({"channel": "WEB"}, 400, "INVALID_ARGUMENT", "customer_id"),
        ({"customerId": "c1", "channel": "NOPE"}, 400, "INVALID_ARGUMENT", "NOPE"),
        ({"customerId": "c1", "channel": "WEB", "limit": 100000}, 400, "INVALID_ARGUMENT",
         "limit"),
        ({"customerId": "c1"}, 400, "INVALID_ARGUMENT", "channel"),
    ],
)
async def test_decide_errors_are_json_with_the_grpc_status(
    http: aiohttp.ClientSession, body: Any, status: int, code: str, needle: str
) -> None:
    got, resp = await _post(http, "/v1/decide", body)
    assert got == status
    assert resp["error"]["status"] == code
    assert resp["error"]["code"] == grpc.StatusCode[code].value[0]
    assert needle in resp["error"]["message"]


async def test_outcome_events_and_not_found(
    http: aiohttp.ClientSession, demo_customers: list[dict[str, object]]
) -> None:
    cid = str(demo_customers[1]["customer_id"])
    status, resp = await _post(http, "/v1/events", {
        "customerId": cid,
        "events": [{"feature": "session_page_views", "value": {"intValue": "1"}, "op": "ADD"},
                   {"feature": "cart_value", "value": {"numberValue": 99.5}}]})
    assert status == 200 and resp == {"applied": 2}
    status, resp = await _post(http, "/v1/events", {
        "customerId": cid, "events": [{"feature": "no_such_feature",
                                       "value": {"intValue": "1"}}]})
    assert status == 400 and "events" in resp["error"]["message"]
    status, resp = await _post(http, "/v1/outcome", {
        "customerId": cid, "actionId": "no_such_action", "outcome": "CLICK", "eventId": "e1"})
    assert status == 404 and resp["error"]["status"] == "NOT_FOUND"
    status, resp = await _post(http, "/v1/outcome", {
        "customerId": cid, "actionId": "card_gold", "outcome": "CLICK",
        "eventId": f"e-{uuid.uuid4().hex}", "channel": "WEB"})
    assert status == 200 and resp == {"applied": True}


async def test_chat_trigger_and_capacity_over_json(http: aiohttp.ClientSession) -> None:
    status, resp = await _post(http, "/v1/agent-capacity",
                               {"queue": "sales", "agentsAvailable": 2, "agentsBusy": 1})
    assert status == 200 and resp["queue"] == "sales"
    free = int(resp["freeCapacity"])  # int64 is a string in proto3 JSON
    assert free >= 1
    session = f"s-{uuid.uuid4().hex[:10]}"
    status, resp = await _post(http, "/v1/chat-trigger", {
        "sessionId": session, "pageType": "pricing", "dwellTimeS": 30, "pagesInSession": 4})
    assert status == 200, resp
    assert resp["showInvite"] is True and resp["inviteId"] == resp["decisionId"]
    assert resp["kind"] == "sales" and resp["treatment"]["title"]
    status, resp2 = await _post(http, "/v1/outcome", {
        "decisionId": resp["inviteId"], "actionId": resp["actionId"],
        "customerId": f"visitor-{session}", "outcome": "REJECT", "eventId": "d1",
        "channel": "WEB"})
    assert status == 200 and resp2 == {"applied": True}
    status, resp3 = await _post(http, "/v1/chat-trigger", {
        "sessionId": session, "pageType": "pricing", "dwellTimeS": 40, "pagesInSession": 4})
    assert resp3["showInvite"] is False and resp3["reasonCodes"] == ["DECLINE_COOLDOWN"]
    status, resp4 = await _post(http, "/v1/chat-trigger", {"pageType": "pricing"})
    assert status == 400 and "session_id" in resp4["error"]["message"]


async def test_inspect_shows_features_candidates_and_history(
    http: aiohttp.ClientSession, demo_customers: list[dict[str, object]],
    http_server: NbaServer,
) -> None:
    cid = str(demo_customers[2]["customer_id"])
    status, _ = await _post(http, "/v1/outcome", {
        "customerId": cid, "actionId": "savings_kids", "outcome": "REJECT",
        "eventId": f"i-{uuid.uuid4().hex}", "channel": "WEB"})
    assert status == 200
    async with http.get("/v1/inspect", params={"customer_id": cid, "channel": "WEB"}) as r:
        assert r.status == 200
        resp = await r.json()
    feats = {f["name"]: f for f in resp["features"]}
    assert feats["age"]["source"] == "batch" and feats["age"]["value"]
    assert feats["age"]["ageS"] >= 0 and feats["age"]["stale"] is False
    assert feats["segment"]["value"] in ("mass", "affluent", "gold", "vip", "student",
                                         "small_business")
    assert feats["session_dwell_s"]["missing"] is True  # no events for this customer yet
    assert feats["channel"]["value"] == "WEB" and feats["channel"]["source"] == "context"
    cands = resp["decision"]["explanation"]["candidates"]
    served = [c for c in cands if not c["removedBy"]]
    assert served and all(c["rank"] >= 1 for c in served)
    assert len(served) == len(resp["decision"]["recommendations"])
    assert any(c["removedBy"] for c in cands)
    hist = [h for h in resp["history"] if h["actionId"] == "savings_kids"]
    assert hist and hist[0]["outcome"] == "REJECT" and int(hist[0]["count"]) == 1
    assert hist[0]["channel"] == "WEB"  # the channel the reject came in on
    # POST with the full message (context included) and the same answer shape over gRPC Admin.
    status, posted = await _post(http, "/v1/inspect", {
        "customerId": cid, "channel": "CALL_CENTRE",
        "context": {"hour_of_day": {"intValue": "10"}}})
    assert status == 200 and posted["decision"]["recommendations"]
    assert http_server.address is not None
    async with grpc.aio.insecure_channel(http_server.address.target) as ch:
        g = await decisioning_pb2_grpc.AdminStub(ch).Inspect(
            pb.InspectRequest(customer_id=cid, channel=pb.WEB))
    assert {f.name for f in g.features} == set(feats)
    assert any(h.action_id == "savings_kids" for h in g.history)
    async with http.get("/v1/inspect", params={"customer_id": cid, "channel": "FAX"}) as r:
        assert r.status == 400
    async with http.get("/v1/inspect", params={"channel": "WEB"}) as r:
        assert r.status == 400 and "customer_id" in (await r.json())["error"]["message"]


async def test_cors_preflight_and_headers(http: aiohttp.ClientSession) -> None:
    headers = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "content-type"}
    async with http.options("/v1/chat-trigger", headers=headers) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert "content-type" in r.headers["Access-Control-Allow-Headers"]
    async with http.options("/v1/decide", headers={**headers, "Origin": "https://evil.example"}
                            ) as r:
        assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
    async with http.post("/v1/decide", json={"channel": "WEB"}, headers={"Origin": ORIGIN}) as r:
        assert r.status == 400 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
    async with http.get("/healthz") as r:
        assert "Access-Control-Allow-Origin" not in r.headers


async def test_limits_and_unknown_routes(http: aiohttp.ClientSession) -> None:
    status, resp = await _post(http, "/v1/decide", b"{" + b" " * (1 << 20) + b"}",
                               headers={"content-type": "application/json"})
    assert status == 413 and resp["error"]["status"] == "RESOURCE_EXHAUSTED"
    async with http.get("/v1/nothing-here") as r:
        assert r.status == 404 and (await r.json())["error"]["status"] == "NOT_FOUND"
    async with http.get("/v1/decide") as r:
        assert r.status == 405 and (await r.json())["error"]["status"] == "UNIMPLEMENTED"


async def test_demo_and_inspector_pages_are_served(http: aiohttp.ClientSession) -> None:
    for path, needle in [("/demo", "chat-widget.js"), ("/inspector", "inspector.js"),
                         ("/static/chat-widget.js", "/v1/chat-trigger"),
                         ("/static/inspector.js", "/v1/inspect")]:
        async with http.get(path) as r:
            assert r.status == 200, path
            assert needle in await r.text()
    async with http.get("/", allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == "/demo"
    async with http.get("/static/../settings.py") as r:
        assert r.status in (403, 404)


async def test_not_ready_server_answers_503(server_store: EmbeddedRedis) -> None:
    settings = server_settings(server_store, model=None)
    server = NbaServer(settings, Runtime(settings))
    await server.start()
    try:
        assert server.http is not None
        async with aiohttp.ClientSession(base_url=server.http.url) as http:
            async with http.get("/healthz") as r:
                assert r.status == 503 and (await r.json()) == {"status": "NOT_SERVING"}
            status, resp = await _post(http, "/v1/decide", {"customerId": "c", "channel": "WEB"})
            assert status == 503 and resp["error"]["status"] == "UNAVAILABLE"
    finally:
        await server.stop(grace=0)
    assert server.http is None


async def test_store_down_is_unavailable_on_both_ports(
    http_server: NbaServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A write cannot fall back: both ports say UNAVAILABLE (retry), never INTERNAL.
    from redis.exceptions import ConnectionError as RedisConnectionError

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(http_server.runtime, "record_outcome", down)
    body = {"decisionId": "d", "actionId": "card_gold", "customerId": "c1",
            "outcome": "CLICK", "eventId": str(uuid.uuid4()), "channel": "WEB"}
    status, doc = await _post(http, "/v1/outcome", body)
    assert status == 503 and doc["error"]["status"] == "UNAVAILABLE"
    assert "Connection refused" not in doc["error"]["message"]
    assert http_server.address is not None
    async with grpc.aio.insecure_channel(http_server.address.target) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await decisioning_pb2_grpc.DecisioningStub(ch).RecordOutcome(pb.RecordOutcomeRequest(
                decision_id="d", action_id="card_gold", customer_id="c1", outcome=pb.CLICK,
                event_id=str(uuid.uuid4()), channel=pb.WEB), timeout=5)
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
