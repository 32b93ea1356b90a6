"""Chaos under load, loopback only and bounded in time: the store killed and restarted, the
store slowed by a proxy, and bad / unsigned / good models published while clients decide."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import redis

from features.schema import FeatureSchema
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.demo import write_customers
from nba_service.runtime import Runtime
from nba_service.scoring.registry import publish, read_current
from nba_service.security.signing import generate_keypair, load_private_key, sign_artifact
from nba_service.server import NbaServer
from nba_service.settings import Settings
from nba_service.store.embedded import EmbeddedRedis
from nba_service.store.loader import load_file
from tests.chaos.conftest import KillableValkey, Load
from tests.faults import LatencyProxy
from tests.integration.test_hot_swap import _corrupt, _install_raw, _switches, _wrong_schema

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

STORE_DOWN = "fallback:store_unavailable"


def seed(url: str, customers: list[dict[str, object]], schema: FeatureSchema, tmp: Path) -> None:
    data = tmp / "customers.parquet"
    if not data.exists():
        write_customers(data, customers, schema)
    client = redis.Redis.from_url(url)
    report = load_file(data, client, schema, progress=False)
    client.close()
    assert report.loaded == len(customers)


@pytest.fixture
async def served(request: pytest.FixtureRequest) -> AsyncIterator[list[NbaServer]]:
    servers: list[NbaServer] = []
    yield servers
    for s in servers:
        await s.stop(grace=0.5)


async def serve(servers: list[NbaServer], **kw: object) -> tuple[NbaServer, str]:
    # Server maximum = the clients' deadline: on a shared 2-core machine a scheduling stall
    # must not be mistaken for the store fault under test.
    settings = Settings(port=0, http_port=-1, catalog_watch_interval_s=0, max_deadline_s=2.0,
                        breaker_open_s=0.3, breaker_min_calls=10, **kw)  # type: ignore[arg-type]
    s = NbaServer(settings, Runtime(settings))
    await s.start()
    servers.append(s)
    assert s.address is not None
    return s, s.address.target


def recovery_s(load: Load, since: float) -> float:
    normal = [t for t, reasons, _ in load.answers
              if t > since and not any(r.startswith("fallback:") for r in reasons)]
    assert normal, "no normal answer after the store came back"
    return normal[0] - since


async def test_store_killed_and_restarted_under_load(
    valkey: KillableValkey, served: list[NbaServer], model_artifact: Path,
    demo_schema: FeatureSchema, demo_customers: list[dict[str, object]], tmp_path: Path,
) -> None:
    seed(valkey.url, demo_customers, demo_schema, tmp_path)
    _, target = await serve(served, redis_url=valkey.url, model_path=model_artifact,
                            redis_timeout_s=0.25)
    async with grpc.aio.insecure_channel(target) as ch:
        load = Load(decisioning_pb2_grpc.DecisioningStub(ch),
                    [str(c["customer_id"]) for c in demo_customers], timeout_s=2.0)
        load.start()
        try:
            await load.more(200)
            valkey.kill()
            await load.more(400)
            valkey.start()  # same unix socket path, empty: the data is loaded again
            seed(valkey.url, demo_customers, demo_schema, tmp_path)
            back = time.monotonic()
            t0 = time.monotonic()
            while time.monotonic() - t0 < 10 and not any(
                    t > back and STORE_DOWN not in r for t, r, _ in load.answers):
                await asyncio.sleep(0.02)
            await load.more(100)
        finally:
            await load.stop()
    answered = len(load.answers) / load.total
    assert answered >= 0.999, load.failures[:5]
    assert sum(STORE_DOWN in r for _, r, _ in load.answers) >= 100  # the outage was flagged
    assert recovery_s(load, back) <= 10


async def test_store_latency_injected_by_a_proxy(
    served: list[NbaServer], model_artifact: Path, demo_schema: FeatureSchema,
    demo_customers: list[dict[str, object]], tmp_path: Path,
) -> None:
    with EmbeddedRedis(tcp_port=True) as store:
        seed(store.url, demo_customers, demo_schema, tmp_path)
        assert store.port is not None
        proxy = await LatencyProxy("127.0.0.1", store.port).start()
        try:
            _, target = await serve(served, redis_url=proxy.url, model_path=model_artifact,
                                    redis_timeout_s=0.25)
            async with grpc.aio.insecure_channel(target) as ch:
                load = Load(decisioning_pb2_grpc.DecisioningStub(ch),
                            [str(c["customer_id"]) for c in demo_customers], timeout_s=2.0)
                load.start()
                try:
                    await load.more(200)
                    # Replies now take longer than the client's whole deadline: only the
                    # store timeout and the fallback keep the calls from failing.
                    proxy.reply_delay_s = 3.0
                    slow_from = time.monotonic()
                    await load.more(300)
                    proxy.reply_delay_s = 0.0
                    back = time.monotonic()
                    t0 = time.monotonic()
                    while time.monotonic() - t0 < 10 and not any(
                            t > back and STORE_DOWN not in r for t, r, _ in load.answers):
                        await asyncio.sleep(0.02)
                    await load.more(100)
                finally:
                    await load.stop()
        finally:
            await proxy.stop()
    assert load.failures == []  # every call answered within its 2 s deadline
    assert any(STORE_DOWN in r for t, r, _ in load.answers if t > slow_from)
    assert recovery_s(load, back) <= 10


async def test_bad_unsigned_and_good_models_published_under_load(
    served: list[NbaServer], server_store: EmbeddedRedis, model_artifact: Path,
    demo_schema: FeatureSchema, demo_customers: list[dict[str, object]], tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from training.train import train_demo_model

    private, public = generate_keypair()
    (tmp_path / "pub.pem").write_bytes(public)
    key = load_private_key(private)
    first = tmp_path / "first"
    shutil.copytree(model_artifact, first)
    sign_artifact(first, key)
    registry = tmp_path / "registry"
    v1 = publish(first, registry, demo_schema)
    catalog = served  # keep the fixture order obvious: servers stop after this test
    from nba_service.engine.catalog import load_catalog
    from tests.conftest import EXAMPLES

    second = Path(train_demo_model(demo_schema, load_catalog(EXAMPLES / "catalog.yaml",
                                                             demo_schema),
                                   tmp_path_factory.mktemp("m2"), n_customers=300, seed=9))
    server, target = await serve(catalog, redis_url=server_store.url, model_registry=registry,
                                 model_watch_interval_s=0.05,
                                 model_public_key=tmp_path / "pub.pem")
    assert server.runtime.models.version == v1

    async def refused_more_than(n: int) -> None:
        t0 = time.monotonic()
        while server.runtime.models.failures <= n:
            assert time.monotonic() - t0 < 15, "the bad model was never tried"
            await asyncio.sleep(0.01)

    async with grpc.aio.insecure_channel(target) as ch:
        load = Load(decisioning_pb2_grpc.DecisioningStub(ch),
                    [str(c["customer_id"]) for c in demo_customers], timeout_s=5)
        load.start()
        try:
            await load.more(50)
            for version, tamper in (("unsigned-1", None), ("corrupt-1", _corrupt),
                                    ("schema-1", _wrong_schema)):
                before = server.runtime.models.failures
                if tamper is None:  # valid but unsigned: the key says no
                    await asyncio.to_thread(
                        _install_raw, second, registry, version, lambda p: None)
                else:  # signed first, then tampered with: the signature no longer matches
                    signed = tmp_path / version
                    shutil.copytree(second, signed)
                    sign_artifact(signed, key)
                    await asyncio.to_thread(_install_raw, signed, registry, version, tamper)
                await refused_more_than(before)
                await load.more(50)
            good = tmp_path / "good"
            shutil.copytree(second, good)
            sign_artifact(good, key)
            v2 = await asyncio.to_thread(publish, good, registry, demo_schema)
            t0 = time.monotonic()
            while not (load.answers and load.answers[-1][2] == v2):
                assert time.monotonic() - t0 < 15, "the good model was never served"
                await asyncio.sleep(0.01)
            await load.more(50)
        finally:
            await load.stop()
    assert load.failures == []
    versions = [v for _, _, v in load.answers]
    assert _switches(versions) == [(v1, v2)]
    assert read_current(registry) == v2
