"""The status-code contract, table-tested over a real channel against a real server and store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
import redis

from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.client import build_request
from nba_service.runtime import Runtime
from nba_service.security.auth import hash_token
from nba_service.server import NbaServer
from nba_service.settings import Settings
from nba_service.store.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration

APP, WIDGET = "app-token-1", "widget-token-2"
SECRET = "detail-that-must-stay-in-the-log"


def tokens(tmp: Path) -> Path:
    p = tmp / "tokens.yaml"
    p.write_text(
        f"""tokens:
  - name: app
    sha256: {hash_token(APP)}
    rpcs: ["nba.v1.Decisioning/*"]
  - name: chat-widget
    sha256: {hash_token(WIDGET)}
    rpcs: [nba.v1.Decisioning/Decide]
    channels: [CHAT]
"""
    )
    return p


@pytest_asyncio.fixture(scope="module")
async def server(
    server_store: EmbeddedRedis, model_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[NbaServer]:
    settings = Settings(
        # The store's own timeout is longer than the server's maximum deadline, so a held
        # write runs into the deadline, not the socket timeout.
        port=0, redis_url=server_store.url, model_path=model_artifact, max_deadline_s=0.5,
        redis_timeout_s=3.0,
        auth_tokens_file=tokens(tmp_path_factory.mktemp("auth")),
    )
    s = NbaServer(settings, Runtime(settings))
    await s.start()
    yield s
    await s.stop(grace=0.5)


@pytest_asyncio.fixture(scope="module")
async def stub(server: NbaServer) -> AsyncIterator[decisioning_pb2_grpc.DecisioningStub]:
    assert server.address is not None
    async with grpc.aio.insecure_channel(server.address.target) as ch:
        yield decisioning_pb2_grpc.DecisioningStub(ch)


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def outcome(cid: str, action: str, event: str) -> pb.RecordOutcomeRequest:
    return pb.RecordOutcomeRequest(customer_id=cid, action_id=action, outcome=pb.IMPRESSION,
                                   event_id=event, channel=pb.WEB)


Call = Callable[[decisioning_pb2_grpc.DecisioningStub, grpc.aio.Channel], Awaitable[Any]]

CASES: list[tuple[str, Call, grpc.StatusCode, str]] = [
    ("missing customer id",
     lambda s, ch: s.Decide(pb.DecideRequest(channel=pb.WEB), metadata=auth(APP), timeout=5),
     grpc.StatusCode.INVALID_ARGUMENT, "customer_id"),
    ("unknown channel",
     lambda s, ch: s.Decide(pb.DecideRequest(customer_id="c", channel=99), metadata=auth(APP),
                            timeout=5),
     grpc.StatusCode.INVALID_ARGUMENT, "channel"),
    ("no token",
     lambda s, ch: s.Decide(build_request("c", "WEB"), timeout=5),
     grpc.StatusCode.UNAUTHENTICATED, "missing bearer token"),
    ("unknown token",
     lambda s, ch: s.Decide(build_request("c", "WEB"), metadata=auth("forged"), timeout=5),
     grpc.StatusCode.UNAUTHENTICATED, "unknown token"),
    ("widget token calls Admin",
     lambda s, ch: decisioning_pb2_grpc.AdminStub(ch).GetStatus(
         pb.GetStatusRequest(), metadata=auth(WIDGET), timeout=5),
     grpc.StatusCode.PERMISSION_DENIED, "may not call nba.v1.Admin/GetStatus"),
    ("widget token on another channel",
     lambda s, ch: s.Decide(build_request("c", "CALL_CENTRE"), metadata=auth(WIDGET), timeout=5),
     grpc.StatusCode.PERMISSION_DENIED, "may not use channel CALL_CENTRE"),
    ("message over the size limit",
     lambda s, ch: s.Decide(pb.DecideRequest(customer_id="c", channel=pb.WEB,
                                             placement="x" * (2 << 20)),
                            metadata=auth(APP), timeout=5),
     grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    ("unknown action",
     lambda s, ch: s.RecordOutcome(outcome("c", "no-such-action", "e1"), metadata=auth(APP),
                                   timeout=5),
     grpc.StatusCode.NOT_FOUND, "no-such-action"),
]


@pytest.mark.parametrize(("name", "call", "code", "detail"), CASES, ids=[c[0] for c in CASES])
async def test_status_code_table(
    server: NbaServer, stub: decisioning_pb2_grpc.DecisioningStub, name: str, call: Call,
    code: grpc.StatusCode, detail: str,
) -> None:
    assert server.address is not None
    async with grpc.aio.insecure_channel(server.address.target) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call(stub, ch)
    assert exc.value.code() == code, exc.value.details()
    assert detail in (exc.value.details() or "")


async def test_ok_with_the_right_token(stub: decisioning_pb2_grpc.DecisioningStub) -> None:
    resp = await stub.Decide(build_request("c1", "CHAT"), metadata=auth(WIDGET), timeout=5)
    assert resp.decision_id


async def test_health_needs_no_token(server: NbaServer) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    assert server.address is not None
    async with grpc.aio.insecure_channel(server.address.target) as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                          timeout=5)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_deadline_exceeded_when_a_write_outlives_the_server_maximum(
    server: NbaServer, stub: decisioning_pb2_grpc.DecisioningStub, server_store: EmbeddedRedis,
) -> None:
    action = server.runtime.catalogs.current.catalog.actions[0].id  # type: ignore[union-attr]
    event = uuid.uuid4().hex
    admin = redis.Redis.from_url(server_store.url)
    # The store accepts connections but holds every write: the outcome cannot finish within
    # the server's 0.5 s maximum, whatever the client's own (longer) deadline.
    admin.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.RecordOutcome(outcome("c-dl", action, event), metadata=auth(APP),
                                     timeout=10)
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert loop.time() - t0 < 1.4
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()
    # The client's retry with the same event_id is applied at most once overall.
    first = await stub.RecordOutcome(outcome("c-dl", action, event), metadata=auth(APP),
                                     timeout=5)
    again = await stub.RecordOutcome(outcome("c-dl", action, event), metadata=auth(APP),
                                     timeout=5)
    assert again.applied is False
    assert first.applied in (True, False)  # False if the timed-out call's script ran on unpause


async def test_unavailable_when_the_store_is_down_for_a_write(
    server_store: EmbeddedRedis, model_artifact: Path,
) -> None:
    store = EmbeddedRedis().start()
    settings = Settings(port=0, redis_url=store.url, model_path=model_artifact)
    s = NbaServer(settings, Runtime(settings))
    address = await s.start()
    try:
        store.stop()
        action = s.runtime.catalogs.current.catalog.actions[0].id  # type: ignore[union-attr]
        async with grpc.aio.insecure_channel(address.target) as ch:
            stub = decisioning_pb2_grpc.DecisioningStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.RecordOutcome(outcome("c", action, "e-down"), timeout=5)
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
            # ... while a decision is never UNAVAILABLE because of the store.
            resp = await stub.Decide(build_request("c", "WEB"), timeout=5)
            assert resp.degraded and resp.recommendations
    finally:
        await s.stop(grace=0.1)
        store.stop()


class SlowStartRuntime(Runtime):
    """A real runtime whose start waits for the test: the window where the port is open."""

    def __init__(self, settings: Settings, gate: asyncio.Event) -> None:
        super().__init__(settings)
        self.gate = gate

    async def start(self) -> None:
        await self.gate.wait()
        await super().start()


async def test_unavailable_while_starting(
    server_store: EmbeddedRedis, model_artifact: Path
) -> None:
    from nba_service.store.embedded import free_port

    gate = asyncio.Event()
    port = free_port()
    settings = Settings(port=port, redis_url=server_store.url, model_path=model_artifact)
    s = NbaServer(settings, SlowStartRuntime(settings, gate))
    starting = asyncio.create_task(s.start())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = decisioning_pb2_grpc.DecisioningStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.Decide(build_request("c", "WEB"), timeout=5, wait_for_ready=True)
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "starting" in (exc.value.details() or "")
            gate.set()
            await starting
            resp = await stub.Decide(build_request("c", "WEB"), timeout=5)
            assert resp.decision_id
    finally:
        gate.set()
        if not starting.done():
            await starting
        await s.stop(grace=0.1)


async def test_internal_is_generic_and_the_trace_stays_in_the_log(
    server: NbaServer, stub: decisioning_pb2_grpc.DecisioningStub,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def explode(req: Any) -> Any:
        raise RuntimeError(SECRET)

    monkeypatch.setattr(server.runtime, "decide", explode)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.Decide(build_request("c", "WEB"), metadata=auth(APP), timeout=5)
    assert exc.value.code() == grpc.StatusCode.INTERNAL
    details = exc.value.details() or ""
    assert SECRET not in details and "Traceback" not in details and "RuntimeError" not in details
    assert any(SECRET in (r.exc_text or "") or SECRET in str(r.exc_info) for r in caplog.records)
