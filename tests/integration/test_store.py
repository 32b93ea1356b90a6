"""OnlineStore against a real valkey-server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection

from features.encoding import encode_batch_values
from features.packing import pack
from features.schema import FeatureSchema
from nba_service.store.embedded import EmbeddedRedis
from nba_service.store.keys import features_key, history_key, realtime_key, session_key
from nba_service.store.online import OnlineStore

pytestmark = pytest.mark.integration

NOW = 1_700_000_000_000
MIN_MS = 60_000
DAY_MS = 86_400_000


@pytest.fixture
def store(redis_async: aioredis.Redis, demo_schema: FeatureSchema) -> OnlineStore:
    return OnlineStore(redis_async, demo_schema)


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts writes to the socket: one pipelined round trip is exactly one send."""
    calls: list[int] = []
    original = AbstractConnection.send_packed_command

    async def spy(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        calls.append(1)
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", spy)
    yield calls


async def test_fetch_is_one_round_trip(
    store: OnlineStore, redis_async: aioredis.Redis, redis_sync: redis.Redis, sends: list[int]
) -> None:
    await store.write_customer("42", {"age": 50}, ts_ms=NOW)
    await redis_async.hset(history_key("42"), mapping={"card_gold:n": 2})
    await redis_async.ping()  # connection established before counting
    redis_sync.config_resetstat()
    sends.clear()
    snap = await store.fetch("42", now_ms=NOW)
    assert len(sends) == 1
    stats = redis_sync.info("commandstats")
    assert stats["cmdstat_get"]["calls"] == 1
    assert stats["cmdstat_hgetall"]["calls"] == 2
    assert snap.found and snap.history == {b"card_gold:n": b"2"}


async def test_cold_start_gives_defaults(store: OnlineStore, demo_schema: FeatureSchema) -> None:
    snap = await store.fetch("nobody", now_ms=NOW)
    assert not snap.found and snap.features_ts_ms is None
    np.testing.assert_array_equal(snap.batch, store.freshness.batch_defaults)
    np.testing.assert_array_equal(snap.realtime, store.freshness.realtime_defaults)
    assert set(snap.missing) == set(store.freshness.batch_names + store.freshness.realtime_names)
    assert snap.history == {} and snap.problems == () and not snap.degraded


async def test_write_then_fetch(store: OnlineStore, demo_schema: FeatureSchema) -> None:
    values = {"age": 33, "income": 41000.25, "segment": "student", "region": "east",
              "has_savings": True, "balance": -12.5}
    await store.write_customer("c1", values, ts_ms=NOW - MIN_MS)
    snap = await store.fetch("c1", now_ms=NOW)
    assert snap.found and snap.features_ts_ms == NOW - MIN_MS
    np.testing.assert_array_equal(snap.batch, encode_batch_values(demo_schema, values))
    assert snap.batch.dtype == np.float32 and snap.stale == ()


async def test_stale_batch_values_are_imputed_and_reported(store: OnlineStore) -> None:
    await store.write_customer("c2", {"age": 70, "balance": 999.0}, ts_ms=NOW - 8 * DAY_MS)
    snap = await store.fetch("c2", now_ms=NOW)
    names = store.freshness.batch_names
    assert snap.batch[names.index("age")] == 70  # 400d max_age
    assert snap.batch[names.index("balance")] == 0  # 7d max_age -> default
    assert "balance" in snap.stale and "age" not in snap.stale
    assert "region" in snap.missing


async def test_schema_mismatch_and_garbage_are_missing_not_errors(
    store: OnlineStore, redis_async: aioredis.Redis, demo_schema: FeatureSchema
) -> None:
    other = FeatureSchema(features=demo_schema.features[1:], name="other")
    await redis_async.set(features_key("old"), pack(other, {"tenure_months": 5}, NOW))
    await redis_async.set(features_key("junk"), b"not a record")
    old = await store.fetch("old", now_ms=NOW)
    junk = await store.fetch("junk", now_ms=NOW)
    assert not old.found and old.problems == ("schema_mismatch",) and old.degraded
    assert not junk.found and junk.problems == ("bad_features_record",)
    np.testing.assert_array_equal(old.batch, store.freshness.batch_defaults)


async def test_apply_events_ops_timestamps_and_ttl(
    store: OnlineStore, redis_async: aioredis.Redis
) -> None:
    n = await store.apply_events(
        "c3",
        [("session_page_views", 1, "incr"), ("session_page_views", 2, "add"),
         ("cart_value", 10, "set"), ("cart_value", 4, "max"), ("session_dwell_s", 30, "max"),
         ("errors_seen", 5, "min"), ("errors_seen", 3, "min")],
        now_ms=NOW,
    )
    assert n == 7
    raw = await redis_async.hgetall(realtime_key("c3"))
    assert raw[b"session_page_views:ts"] == str(NOW).encode()
    ttl = await redis_async.pttl(realtime_key("c3"))
    assert 30 * DAY_MS - 60_000 < ttl <= 30 * DAY_MS
    snap = await store.fetch("c3", now_ms=NOW + 1000)
    rt = dict(zip(store.freshness.realtime_names, snap.realtime.tolist(), strict=True))
    assert rt["session_page_views"] == 3 and rt["cart_value"] == 10
    assert rt["session_dwell_s"] == 30 and rt["errors_seen"] == 3
    assert set(snap.missing) >= {"failed_logins", "hours_since_complaint"}


async def test_realtime_staleness_is_per_feature(store: OnlineStore) -> None:
    await store.apply_events("c4", [("session_page_views", 5, "set")], now_ms=NOW)
    await store.apply_events("c4", [("cart_value", 80, "set")], now_ms=NOW + 20 * MIN_MS)
    snap = await store.fetch("c4", now_ms=NOW + 40 * MIN_MS)
    rt = dict(zip(store.freshness.realtime_names, snap.realtime.tolist(), strict=True))
    assert "session_page_views" in snap.stale and rt["session_page_views"] == 0
    assert "cart_value" not in snap.stale and rt["cart_value"] == 80
    # a counter never builds on a value that readers already treat as stale
    await store.apply_events("c4", [("session_page_views", 1, "incr")], now_ms=NOW + 40 * MIN_MS)
    snap = await store.fetch("c4", now_ms=NOW + 40 * MIN_MS)
    assert snap.realtime[store.freshness.realtime_names.index("session_page_views")] == 1


async def test_apply_events_validates_before_writing(
    store: OnlineStore, redis_async: aioredis.Redis
) -> None:
    for bad in [("nope", 1, "set"), ("income", 1, "set"), ("cart_value", "x", "incr")]:
        with pytest.raises(ValueError, match=repr(bad[0])):
            await store.apply_events("c5", [("session_page_views", 1, "incr"), bad], now_ms=NOW)
    assert await redis_async.exists(realtime_key("c5")) == 0
    assert await store.apply_events("c5", [], now_ms=NOW) == 0


async def test_concurrent_increments_are_atomic(
    redis_async: aioredis.Redis, embedded_redis: EmbeddedRedis, demo_schema: FeatureSchema
) -> None:
    # Separate clients -> separate connections, so the server really interleaves the scripts.
    clients = [aioredis.Redis(unix_socket_path=str(embedded_redis.socket_path)) for _ in range(4)]
    stores = [OnlineStore(c, demo_schema) for c in clients]
    try:
        await asyncio.gather(*(
            stores[i % 4].apply_events("c6", [("errors_seen", 1, "incr"),
                                              ("session_dwell_s", float(i), "max")], now_ms=NOW)
            for i in range(200)
        ))
    finally:
        for c in clients:
            await c.aclose()
    raw = await redis_async.hgetall(realtime_key("c6"))
    assert float(raw[b"errors_seen"]) == 200 and float(raw[b"session_dwell_s"]) == 199


async def test_ttl_override_and_no_ttl(
    redis_async: aioredis.Redis, demo_schema: FeatureSchema
) -> None:
    store = OnlineStore(redis_async, demo_schema, realtime_ttl_s=60)
    await store.apply_events("c7", [("cart_value", 1, "set")], now_ms=NOW)
    assert 0 < await redis_async.pttl(realtime_key("c7")) <= 60_000
    store = OnlineStore(redis_async, demo_schema, realtime_ttl_s=0)
    await store.apply_events("c8", [("cart_value", 1, "set")], now_ms=NOW)
    assert await redis_async.pttl(realtime_key("c8")) == -1


async def test_extra_commands_share_the_round_trip(
    store: OnlineStore, redis_async: aioredis.Redis, sends: list[int]
) -> None:
    await redis_async.set(session_key("c9"), b"chat-session")
    await redis_async.ping()
    sends.clear()
    snap = await store.fetch("c9", now_ms=NOW, extra=[("GET", session_key("c9"))])
    assert len(sends) == 1 and snap.extra == (b"chat-session",)


async def test_forget_customer(store: OnlineStore, redis_async: aioredis.Redis) -> None:
    await store.write_customer("c10", {}, ts_ms=NOW)
    await store.apply_events("c10", [("cart_value", 1, "set")], now_ms=NOW)
    assert await store.forget_customer("c10") == 2
    assert not (await store.fetch("c10", now_ms=NOW)).found


async def test_decode_responses_client_is_refused(
    embedded_redis: EmbeddedRedis, demo_schema: FeatureSchema
) -> None:
    client = aioredis.Redis(unix_socket_path=str(embedded_redis.socket_path),
                            decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses=False"):
            OnlineStore(client, demo_schema)
    finally:
        await client.aclose()

