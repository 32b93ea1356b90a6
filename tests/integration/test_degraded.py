"""Degraded mode: a slow, down or inconsistent store gives fallback answers within the deadline,
the breaker makes an outage cheap, and normal answers come back within seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis

from features.schema import FeatureSchema
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.client import build_request
from nba_service.demo import write_customers
from nba_service.engine.catalog import Catalog
from nba_service.reliability.breaker import BreakerState
from nba_service.reliability.deadline import Deadline, with_deadline
from nba_service.reliability.store_guard import StoreUnavailable
from nba_service.runtime import Runtime
from nba_service.server import NbaServer
from nba_service.settings import Settings
from nba_service.store.embedded import EmbeddedRedis
from nba_service.store.keys import history_key
from nba_service.store.loader import load_file
from nba_service.store.online import OnlineStore, StoreIntegrityError
from tests.faults import LatencyProxy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tcp_store(
    demo_schema: FeatureSchema, demo_customers: list[dict[str, object]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tcp_port=True) as store:
        data = tmp_path_factory.mktemp("data") / "customers.parquet"
        write_customers(data, demo_customers, demo_schema)
        load_file(data, redis.Redis.from_url(store.url), demo_schema, progress=False)
        yield store


@pytest_asyncio.fixture(scope="module")
async def proxy(tcp_store: EmbeddedRedis) -> AsyncIterator[LatencyProxy]:
    assert tcp_store.port is not None
    p = await LatencyProxy("127.0.0.1", tcp_store.port).start()
    yield p
    await p.stop()


@pytest_asyncio.fixture(scope="module")
async def server(proxy: LatencyProxy, model_artifact: Path) -> AsyncIterator[NbaServer]:
    settings = Settings(
        port=0, redis_url=proxy.url, model_path=model_artifact, redis_timeout_s=0.25,
        breaker_min_calls=5, breaker_window_s=5, breaker_open_s=0.5, breaker_probes=2,
        decision_log=False,
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


def fallback_ids(catalog: Catalog) -> set[str]:
    return {a.id for a in catalog.actions if a.fallback}


async def wait_normal(stub: decisioning_pb2_grpc.DecisioningStub, cid: str, limit_s: float
                      ) -> float:
    """Seconds until a decision is no longer a fallback; fails after `limit_s`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        resp = await stub.Decide(build_request(cid, "WEB"), timeout=2)
        if not any(r.startswith("fallback:") for r in resp.degraded_reasons):
            return time.monotonic() - t0
        await asyncio.sleep(0.05)  # pacing between polls, not synchronisation
    raise AssertionError(f"still degraded after {limit_s} s")


async def test_slow_store_falls_back_within_the_deadline_and_the_breaker_opens(
    server: NbaServer, stub: decisioning_pb2_grpc.DecisioningStub, proxy: LatencyProxy,
    demo_catalog: Catalog, demo_customers: list[dict[str, object]],
) -> None:
    cid = str(demo_customers[0]["customer_id"])
    await wait_normal(stub, cid, 5)
    proxy.reply_delay_s = 2.0
    try:
        for _ in range(6):
            t0 = time.monotonic()
            resp = await stub.Decide(build_request(cid, "WEB"), timeout=0.3)
            assert time.monotonic() - t0 < 0.3
            assert resp.degraded and resp.degraded_reasons[0] == "fallback:store_unavailable"
            assert resp.recommendations
            assert {r.action_id for r in resp.recommendations} <= fallback_ids(demo_catalog)
        assert server.safeguards.breaker.state is BreakerState.OPEN
        # Open breaker: no store call at all, the answer costs the fallback and nothing more.
        resp = await stub.Decide(build_request(cid, "WEB"), timeout=0.3)
        assert resp.degraded and resp.timing.total_us < 5000
        metrics = server.safeguards.metrics.exposition().decode()
        assert "nba_store_breaker_state 2.0" in metrics
        assert 'nba_store_failures_total{kind="breaker_open"}' in metrics
    finally:
        proxy.reply_delay_s = 0.0
    assert await wait_normal(stub, cid, 10) < 10
    for _ in range(2):  # the remaining half-open probes succeed and close the breaker
        await stub.Decide(build_request(cid, "WEB"), timeout=2)
    assert server.safeguards.breaker.state is BreakerState.CLOSED


async def test_store_down_then_back(
    server: NbaServer, stub: decisioning_pb2_grpc.DecisioningStub, proxy: LatencyProxy,
    demo_catalog: Catalog, demo_customers: list[dict[str, object]],
) -> None:
    cid = str(demo_customers[1]["customer_id"])
    await wait_normal(stub, cid, 5)
    proxy.cut()
    try:
        for _ in range(8):
            resp = await stub.Decide(build_request(cid, "CALL_CENTRE"), timeout=1)
            assert resp.degraded_reasons[0] == "fallback:store_unavailable"
            assert {r.action_id for r in resp.recommendations} <= fallback_ids(demo_catalog)
    finally:
        proxy.restore()
    assert await wait_normal(stub, cid, 10) < 10


async def test_unreadable_history_serves_only_cap_exempt_actions(
    server: NbaServer, stub: decisioning_pb2_grpc.DecisioningStub, tcp_store: EmbeddedRedis,
    demo_catalog: Catalog, demo_customers: list[dict[str, object]],
) -> None:
    cid = str(demo_customers[2]["customer_id"])
    await wait_normal(stub, cid, 5)
    admin = redis.Redis.from_url(tcp_store.url)
    admin.set(history_key(cid), b"not a hash")  # every HGETALL of it is WRONGTYPE
    try:
        for _ in range(8):
            resp = await stub.Decide(build_request(cid, "WEB"), timeout=1)
            assert resp.degraded
            assert {r.action_id for r in resp.recommendations} <= fallback_ids(demo_catalog)
        # One customer's bad data is not an outage: the breaker stays closed.
        assert server.safeguards.breaker.state is BreakerState.CLOSED
    finally:
        admin.delete(history_key(cid))
        admin.close()


async def test_shifted_replies_fail_the_ownership_check(
    tcp_store: EmbeddedRedis, demo_schema: FeatureSchema, demo_customers: list[dict[str, object]],
) -> None:
    client = aioredis.Redis.from_url(tcp_store.tcp_url, max_connections=1)
    store = OnlineStore(client, demo_schema)
    a, b = (str(c["customer_id"]) for c in demo_customers[3:5])
    assert (await store.fetch(a)).found
    # A connection goes back to the pool with a reply still pending (the failure mode of a
    # command abandoned mid-flight): the next fetch would read that reply as its own. The
    # abandoned command blocks server-side, so its reply is still in flight when the pool hands
    # the connection out again (redis-py drops a connection only when a reply already waits in
    # its buffer) and the shift reaches our own check.
    conn = await client.connection_pool.get_connection()
    await conn.send_command("BLPOP", f"nba:{{c:{b}}}:nothing", "1")
    await client.connection_pool.release(conn)
    with pytest.raises(StoreIntegrityError):
        await store.fetch(a)
    # The poisoned connection was dropped; the next fetch is clean.
    snap = await store.fetch(a)
    assert snap.found and snap.customer_id == a
    await client.aclose()


async def test_no_command_reaches_the_store_after_the_deadline(
    tcp_store: EmbeddedRedis, proxy: LatencyProxy, demo_schema: FeatureSchema,
) -> None:
    from nba_service.reliability.breaker import CircuitBreaker
    from nba_service.reliability.store_guard import GuardedStore, StoreGuard

    watcher = aioredis.Redis(unix_socket_path=str(tcp_store.socket_path))
    client = aioredis.Redis.from_url(proxy.url, socket_timeout=5)
    guard = StoreGuard(CircuitBreaker(), cap_s=5, reserve_s=0.01)
    store = GuardedStore(client, demo_schema, guard)
    await client.ping()
    async with watcher.monitor() as monitor:
        proxy.reply_delay_s = 1.0
        try:
            with_deadline(Deadline(0.15))
            deadline_wall = time.time() + 0.15
            with pytest.raises(StoreUnavailable, match="timeout"):
                await store.fetch("cust-deadline")
            # Budget already below the reserve: nothing may be sent at all.
            with_deadline(Deadline(0.005))
            with pytest.raises(StoreUnavailable, match="deadline"):
                await store.fetch("cust-late")
        finally:
            proxy.reply_delay_s = 0.0
            with_deadline(None)
        marker = redis.Redis(unix_socket_path=str(tcp_store.socket_path))
        marker.echo("end-of-test-marker")
        marker.close()
        seen = []
        while True:
            cmd = await asyncio.wait_for(monitor.next_command(), 5)
            if "end-of-test-marker" in cmd["command"]:
                break
            seen.append(cmd)
    store_cmds = [c for c in seen if "cust-" in c["command"]]
    assert store_cmds, "the first fetch's pipeline should have reached the store"
    assert all(c["time"] <= deadline_wall + 0.005 for c in store_cmds)
    assert not any("cust-late" in c["command"] for c in seen)
    await client.aclose()
    await watcher.aclose()
