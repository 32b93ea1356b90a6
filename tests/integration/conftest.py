"""A real nba server on an ephemeral port, its own real valkey-server, a real model and catalog."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
import redis

from features.schema import FeatureSchema
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.demo import write_customers
from nba_service.engine.catalog import Catalog, load_catalog
from nba_service.runtime import Runtime
from nba_service.server import NbaServer
from nba_service.settings import Settings
from nba_service.store.embedded import EmbeddedRedis
from nba_service.store.loader import load_file
from training.simulate import Simulator
from training.train import train_demo_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def demo_catalog(demo_schema: FeatureSchema) -> Catalog:
    return load_catalog(EXAMPLES / "catalog.yaml", demo_schema)


@pytest.fixture(scope="session")
def model_artifact(
    demo_schema: FeatureSchema, demo_catalog: Catalog, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("model")
    return Path(train_demo_model(demo_schema, demo_catalog, out, n_customers=400, seed=3))


@pytest.fixture(scope="session")
def demo_customers(demo_schema: FeatureSchema, demo_catalog: Catalog) -> list[dict[str, object]]:
    return Simulator(demo_schema, demo_catalog, seed=11).customers(40)


@pytest.fixture(scope="module")
def server_store(
    demo_schema: FeatureSchema,
    demo_customers: list[dict[str, object]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EmbeddedRedis]:
    """A store of the server's own, so other tests' FLUSHALL cannot pull data from under it."""
    with EmbeddedRedis() as store:
        data = tmp_path_factory.mktemp("data") / "customers.parquet"
        write_customers(data, demo_customers, demo_schema)
        report = load_file(data, redis.Redis.from_url(store.url), demo_schema, progress=False)
        assert report.loaded == len(demo_customers) and report.rejected == 0
        yield store


def server_settings(store: EmbeddedRedis, model: Path | None) -> Settings:
    return Settings(host="127.0.0.1", port=0, redis_url=store.url, model_path=model)


@pytest_asyncio.fixture(scope="module")
async def nba_server(server_store: EmbeddedRedis, model_artifact: Path) -> AsyncIterator[NbaServer]:
    settings = server_settings(server_store, model_artifact)
    server = NbaServer(settings, Runtime(settings))
    await server.start()
    yield server
    await server.stop(grace=0.5)


@pytest_asyncio.fixture(scope="module")
async def channel(nba_server: NbaServer) -> AsyncIterator[grpc.aio.Channel]:
    assert nba_server.address is not None
    async with grpc.aio.insecure_channel(nba_server.address.target) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.aio.Channel) -> decisioning_pb2_grpc.DecisioningStub:
    return decisioning_pb2_grpc.DecisioningStub(channel)
