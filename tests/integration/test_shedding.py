"""Load shedding and cancellation over a real channel: excess calls get RESOURCE_EXHAUSTED at
once, admitted ones complete; a call past its deadline (the client's or the server's maximum)
or cancelled by the client stops its work and frees its slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.client import build_request
from nba_service.runtime import Runtime
from nba_service.server import NbaServer
from nba_service.settings import Settings
from nba_service.store.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module")
async def server(server_store: EmbeddedRedis, model_artifact: Path) -> AsyncIterator[NbaServer]:
    settings = Settings(port=0, http_port=-1, redis_url=server_store.url,
                        model_path=model_artifact, max_in_flight=4, max_deadline_s=0.4)
    s = NbaServer(settings, Runtime(settings))
    await s.start()
    yield s
    await s.stop(grace=0.5)


@pytest_asyncio.fixture(scope="module")
async def stub(server: NbaServer) -> AsyncIterator[decisioning_pb2_grpc.DecisioningStub]:
    assert server.address is not None
    async with grpc.aio.insecure_channel(server.address.target) as ch:
        yield decisioning_pb2_grpc.DecisioningStub(ch)


async def until(cond: Any, limit_s: float = 5.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < limit_s, "condition not reached"
        await asyncio.sleep(0.005)


async def test_excess_calls_are_shed_and_admitted_ones_succeed(
    server: NbaServer, stub: decisioning_pb2_grpc.DecisioningStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = asyncio.Event()
    real = server.runtime.decide

    async def held(req: Any) -> Any:
        await release.wait()
        return await real(req)

    monkeypatch.setattr(server.runtime, "decide", held)
    shedder = server.safeguards.shedder
    admitted = [asyncio.ensure_future(stub.Decide(build_request(f"a{i}", "WEB"), timeout=5))
                for i in range(4)]
    await until(lambda: shedder.in_flight == 4)
    t0 = time.monotonic()
    results = await asyncio.gather(
        *(stub.Decide(build_request(f"x{i}", "WEB"), timeout=5) for i in range(8)),
        return_exceptions=True,
    )
    shed_time = time.monotonic() - t0
    assert all(isinstance(r, grpc.aio.AioRpcError)
               and r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in results)
    assert shed_time < 1.0  # refused at once, not after queueing behind the held calls
    release.set()
    done = await asyncio.gather(*admitted)
    assert all(d.decision_id for d in done)
    await until(lambda: shedder.in_flight == 0)
    assert 'nba_shed_total{method="Decide"} 8.0' in server.safeguards.metrics.exposition().decode()


@pytest.mark.parametrize(("client_timeout", "expect_s"), [(0.15, 0.15), (None, 0.4)])
async def test_deadline_cancels_the_work(
    server: NbaServer, stub: decisioning_pb2_grpc.DecisioningStub,
    monkeypatch: pytest.MonkeyPatch, client_timeout: float | None, expect_s: float,
) -> None:
    cancelled = asyncio.Event()

    async def forever(req: Any) -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    monkeypatch.setattr(server.runtime, "decide", forever)
    t0 = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.Decide(build_request("slow", "WEB"), timeout=client_timeout)
    assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < expect_s + 1.0
    await asyncio.wait_for(cancelled.wait(), 5)
    await until(lambda: server.safeguards.shedder.in_flight == 0)


async def test_client_cancellation_stops_the_handler(
    server: NbaServer, stub: decisioning_pb2_grpc.DecisioningStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def forever(req: Any) -> Any:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    monkeypatch.setattr(server.runtime, "decide", forever)
    call = stub.Decide(build_request("gone", "WEB"), timeout=30)
    await asyncio.wait_for(started.wait(), 5)
    call.cancel()
    await asyncio.wait_for(cancelled.wait(), 5)
    await until(lambda: server.safeguards.shedder.in_flight == 0)


async def test_a_backlog_beyond_max_pending_is_refused_by_grpc_core(
    server_store: EmbeddedRedis, model_artifact: Path,
) -> None:
    """While the server's event loop is busy (here: blocked on purpose), calls wait in gRPC's
    core for the application. With `max_pending` gRPC refuses those beyond the limit at once,
    without Python, so the queue in front of admission stays short; the rest are answered."""
    import threading

    settings = Settings(port=0, http_port=-1, redis_url=server_store.url,
                        model_path=model_artifact, max_pending=2)
    s = NbaServer(settings, Runtime(settings))
    await s.start()
    assert s.address is not None
    target = s.address.target
    n, enough = 40, 30
    codes: list[grpc.StatusCode] = []
    lock = threading.Lock()
    refused_enough, all_done = threading.Event(), threading.Event()

    def record(fut: grpc.Future) -> None:
        code = fut.code()
        with lock:
            codes.append(code)
            if sum(c is not grpc.StatusCode.OK for c in codes) >= enough:
                refused_enough.set()
            if len(codes) == n:
                all_done.set()

    def client() -> None:
        with grpc.insecure_channel(target) as ch:
            stub = decisioning_pb2_grpc.DecisioningStub(ch)
            futs = [stub.Decide.future(build_request(f"C{i:06d}", "WEB"), timeout=20)
                    for i in range(n)]
            for f in futs:
                f.add_done_callback(record)
            all_done.wait(30)

    try:
        await stub_ready(target)
        t = threading.Thread(target=client, daemon=True)
        t.start()
        # Block the server's loop until gRPC's core has refused the backlog by itself.
        assert refused_enough.wait(20), f"gRPC refused too few calls: {codes}"
        await asyncio.to_thread(t.join, 30)
        assert all_done.is_set()
        refused = [c for c in codes if c is not grpc.StatusCode.OK]
        assert len(refused) >= enough and set(refused) == {grpc.StatusCode.CANCELLED}
        assert grpc.StatusCode.OK in codes  # the calls within the limit were answered
    finally:
        await s.stop(grace=0.5)


async def stub_ready(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as ch:
        await decisioning_pb2_grpc.DecisioningStub(ch).Decide(build_request("C000001", "WEB"),
                                                             timeout=10)
