"""Shared fixtures: one real valkey-server per test session, fresh (flushed) clients per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis

from features.schema import FeatureSchema
from nba_service.store.embedded import EmbeddedRedis

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="session")
def demo_schema() -> FeatureSchema:
    return FeatureSchema.from_yaml(EXAMPLES / "features.yaml")


@pytest.fixture(scope="session")
def embedded_redis() -> Iterator[EmbeddedRedis]:
    """A real server on a unix socket (and loopback TCP), shared by the whole session."""
    with EmbeddedRedis(tcp_port=True) as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(embedded_redis: EmbeddedRedis) -> str:
    return embedded_redis.url


@pytest.fixture
def redis_sync(embedded_redis: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = embedded_redis.client()
    client.flushall()
    try:
        yield client
    finally:
        client.close()


@pytest_asyncio.fixture
async def redis_async(embedded_redis: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(unix_socket_path=str(embedded_redis.socket_path))
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()
