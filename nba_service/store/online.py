"""The online feature store: one pipelined round trip per decision, atomic real-time updates.

Works with `redis.asyncio.Redis` and `redis.asyncio.cluster.RedisCluster` alike: all keys of
one customer share a hash tag, so the read pipeline and the Lua script stay in one slot.
Clients must be created with `decode_responses=False` (packed values are binary).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from features.packing import PackedRecord, PackError, SchemaMismatchError, pack, unpack
from features.realtime import Freshness, validate_events
from features.schema import FeatureSchema
from nba_service.store.keys import features_key, history_key, realtime_key

__all__ = [
    "APPLY_EVENTS_LUA",
    "OWNER_ECHO_LUA",
    "CustomerSnapshot",
    "OnlineStore",
    "StoreIntegrityError",
    "read_owned",
]

AsyncClient = Redis | RedisCluster
T = TypeVar("T")

# KEYS[1]: the real-time hash. ARGV[1]: now (ms), ARGV[2]: key TTL (ms, 0 = keep none),
# then one group of 4 per event: name, op (set|incr|max|min), value, max_age_ms (-1 = never).
# A stale or absent current value counts as absent: incr restarts from 0, max/min take the
# event's value, so a counter never builds on a value the reader would already call stale.
APPLY_EVENTS_LUA = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local applied = 0
for i = 3, #ARGV, 4 do
  local name, op, arg = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local max_age = tonumber(ARGV[i + 3])
  local value = arg
  if op ~= 'set' then
    local cur = redis.call('HMGET', key, name, name .. ':ts')
    local v, ts = tonumber(cur[1]), tonumber(cur[2])
    if v ~= nil and v ~= v then v = nil end
    if v ~= nil and max_age >= 0 and (ts == nil or now - ts > max_age) then v = nil end
    local x = tonumber(arg)
    local r
    if op == 'incr' then
      r = (v or 0) + x
    elseif op == 'max' then
      r = (v == nil or x > v) and x or v
    elseif op == 'min' then
      r = (v == nil or x < v) and x or v
    else
      return redis.error_reply('unknown op ' .. op .. ' for ' .. name)
    end
    value = string.format('%.17g', r)
  end
  redis.call('HSET', key, name, value, name .. ':ts', ARGV[1])
  applied = applied + 1
end
if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
return applied
"""


OWNER_ECHO_LUA = "return ARGV[1]"


class StoreIntegrityError(RedisError):
    """The replies of a fetch could not be tied to the customer they were read for."""


@dataclass(frozen=True, slots=True)
class CustomerSnapshot:
    """Everything the decision needs from the store about one customer, defaults imputed."""

    customer_id: str
    found: bool  # packed batch features present and readable
    batch: np.ndarray  # float32, BATCH features in schema order
    realtime: np.ndarray  # float32, REALTIME features in schema order
    missing: tuple[str, ...]  # imputed because absent (or NaN)
    stale: tuple[str, ...]  # imputed because older than max_age
    features_ts_ms: int | None  # write time of the packed record
    history: dict[bytes, bytes]  # raw contact history hash, for the engine's policies
    problems: tuple[str, ...] = ()  # e.g. "schema_mismatch", "bad_features_record"
    extra: tuple[Any, ...] = field(default=())  # replies to the caller's extra commands
    # Batch features absent (NaN) in a record that exists: a gap in the customer's data. (An
    # unknown customer misses all of them; absent real-time values mean "no events yet".)
    batch_missing: tuple[str, ...] = ()

    @property
    def degraded(self) -> bool:
        return bool(self.problems)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_NONCES = itertools.count(1)


async def read_owned(
    client: Any, key: str, commands: Sequence[Sequence[Any]], *, what: str,
) -> list[Any]:
    """`commands` in ONE pipelined round trip, checked to be answers to this request.

    The ownership check rides in the same round trip: a read-only script keyed on `key` (so on
    a Cluster it runs on the slot of the record read) echoes a per-request `nonce`. If replies
    were ever shifted (a connection reused with a reply still pending), the last reply is not
    our nonce: nothing read is used, and the idle connections, one of them poisoned, are
    dropped.
    """
    nonce = f"{key}#{next(_NONCES)}"
    pipe = client.pipeline(transaction=False)
    for cmd in commands:
        pipe.execute_command(*cmd)
    pipe.execute_command("EVAL_RO", OWNER_ECHO_LUA, 1, key, nonce)
    replies = await pipe.execute()
    if replies[-1] != nonce.encode():
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            await pool.disconnect(inuse_connections=False)
        raise StoreIntegrityError(f"store replies for {what} failed the ownership check")
    return list(replies[:-1])


class OnlineStore:
    """Reads and writes a customer's online features under one schema."""

    def __init__(
        self, client: AsyncClient, schema: FeatureSchema, *, realtime_ttl_s: float | None = None
    ) -> None:
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
        if kwargs.get("decode_responses"):
            raise ValueError("OnlineStore needs a client with decode_responses=False")
        self.client = client
        self.schema = schema
        self.freshness = Freshness(schema)
        ttl_ms = (
            self.freshness.realtime_ttl_ms if realtime_ttl_s is None else int(realtime_ttl_s * 1000)
        )
        self.realtime_ttl_ms = ttl_ms or 0
        self._apply_events = client.register_script(APPLY_EVENTS_LUA)
        # Told about every snapshot built (metrics of missing and stale features).
        self.observer: Callable[[CustomerSnapshot], None] | None = None

    async def guarded(self, make: Callable[[], Awaitable[T]]) -> T:
        """Another store call under whatever guards this store's `fetch` (none here; the
        service's `GuardedStore` adds its breaker and deadline budget)."""
        return await make()

    async def fetch(
        self,
        customer_id: str,
        now_ms: int | None = None,
        extra: Sequence[Sequence[str | bytes | int | float]] = (),
    ) -> CustomerSnapshot:
        """Packed features, real-time hash and contact history in ONE pipelined round trip.

        `extra` commands (e.g. the session record) ride in the same pipeline; their replies come
        back in `CustomerSnapshot.extra`. On a Cluster they should use the customer's hash tag.
        """
        now = _now_ms() if now_ms is None else now_ms
        fkey = features_key(customer_id)
        replies = await read_owned(self.client, fkey, [
            ("GET", fkey), ("HGETALL", realtime_key(customer_id)),
            ("HGETALL", history_key(customer_id)), *extra,
        ], what=f"customer {customer_id!r}")
        blob, rt_fields, history = replies[0], replies[1], replies[2]
        return self._snapshot(customer_id, blob, rt_fields or {}, history or {}, now,
                              tuple(replies[3:]))

    def _snapshot(
        self,
        customer_id: str,
        blob: bytes | None,
        rt_fields: Mapping[bytes, bytes],
        history: dict[bytes, bytes],
        now_ms: int,
        extra: tuple[Any, ...],
    ) -> CustomerSnapshot:
        problems: list[str] = []
        record: PackedRecord | None = None
        if blob is not None:
            try:
                record = unpack(self.schema, blob)
            except SchemaMismatchError:
                problems.append("schema_mismatch")
            except PackError:
                problems.append("bad_features_record")
        batch, b_missing, b_stale = self.freshness.batch(record, now_ms)
        realtime, r_missing, r_stale, r_problems = self.freshness.realtime(rt_fields, now_ms)
        snap = CustomerSnapshot(
            customer_id=customer_id,
            found=record is not None,
            batch=batch,
            realtime=realtime,
            missing=b_missing + r_missing,
            stale=b_stale + r_stale,
            features_ts_ms=None if record is None else record.ts_ms,
            history=history,
            problems=tuple(problems) + r_problems,
            extra=extra,
            batch_missing=b_missing if record is not None else (),
        )
        if self.observer is not None and (snap.missing or snap.stale):
            self.observer(snap)
        return snap

    async def write_customer(
        self,
        customer_id: str,
        values: Mapping[str, object] | np.ndarray,
        ts_ms: int | None = None,
    ) -> None:
        """Store a customer's BATCH features: a raw dict (encoded here) or an encoded vector."""
        blob = pack(self.schema, values, _now_ms() if ts_ms is None else ts_ms)
        await self.client.set(features_key(customer_id), blob)

    async def apply_events(
        self,
        customer_id: str,
        events: Sequence[tuple[str, object, str]],
        now_ms: int | None = None,
    ) -> int:
        """Apply real-time events atomically (one Lua script); returns how many were applied.

        Every event is validated first (ValueError naming the event), so nothing is written
        unless all are valid. The hash's TTL is refreshed to `realtime_ttl_ms`.
        """
        encoded = validate_events(self.schema, events)
        if not encoded:
            return 0
        now = _now_ms() if now_ms is None else now_ms
        args: list[str | int] = [now, self.realtime_ttl_ms]
        for e in encoded:
            args += [e.name, e.op, e.value, e.max_age_ms]
        return int(await self._apply_events(keys=[realtime_key(customer_id)], args=args))

    async def forget_customer(self, customer_id: str) -> int:
        """Delete every online key of a customer (erasure requests); returns keys removed."""
        keys = [features_key(customer_id), realtime_key(customer_id), history_key(customer_id)]
        # One slot thanks to the hash tag, so a multi-key DEL is fine on a Cluster too.
        return int(await self.client.delete(*keys))
