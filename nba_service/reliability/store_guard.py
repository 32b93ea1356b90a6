"""Every store read of a decision goes through here: breaker first, then the time budget.

`GuardedStore` wraps an `OnlineStore` so the coordinator's `store.fetch(...)` is guarded
without knowing it: an open breaker fails in microseconds, a call only gets what is left of
the request's deadline (minus a reserve kept for computing the fallback answer), and every
failure surfaces as `StoreUnavailable`, a `RedisError`, which the coordinator already answers
with the channel's fallback set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from features.schema import FeatureSchema
from nba_service.reliability.breaker import CircuitBreaker
from nba_service.reliability.deadline import BudgetExhausted, budget
from nba_service.store.online import CustomerSnapshot, OnlineStore

__all__ = ["GuardedStore", "StoreGuard", "StoreUnavailable"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreUnavailable(RedisError):
    """A store call was not made or did not complete; `reason` says which way."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"store unavailable: {reason}")
        self.reason = reason


class StoreGuard:
    """`cap_s`: the longest any one store call may take. `reserve_s`: kept back from the
    request's deadline. `slow_call_s`: a timeout with a budget at least this long is the
    store's fault (counts against the breaker); a shorter one is the client's tight deadline.
    """

    def __init__(
        self,
        breaker: CircuitBreaker,
        cap_s: float,
        reserve_s: float = 0.01,
        slow_call_s: float = 0.05,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.breaker = breaker
        self.cap_s = cap_s
        self.reserve_s = reserve_s
        self.slow_call_s = slow_call_s
        self.on_failure = on_failure

    def _failed(self, kind: str, breaker: bool) -> StoreUnavailable:
        if breaker:
            self.breaker.record_failure()
        else:
            self.breaker.release_probe()
        if self.on_failure is not None:
            self.on_failure(kind)
        return StoreUnavailable(kind)

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        if not self.breaker.allow():
            if self.on_failure is not None:
                self.on_failure("breaker_open")
            raise StoreUnavailable("breaker_open")
        timeout = budget(self.cap_s, self.reserve_s)
        if timeout <= 0:
            # Nothing is sent once the deadline (less the reserve) has passed.
            raise self._failed("deadline", breaker=False) from BudgetExhausted()
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                result = await make()
        except TimeoutError:
            # Cancelled mid-command: redis-py closes that connection rather than pool it with
            # a reply still pending, so the next request cannot read this one's reply.
            raise self._failed("timeout", breaker=timeout >= self.slow_call_s) from None
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.debug("store call failed after %.1f ms: %r", (time.monotonic() - t0) * 1e3, exc)
            raise self._failed("connection", breaker=True) from None
        except RedisError as exc:
            # A server-side error about this request's data (WRONGTYPE, a failed ownership
            # check): this request cannot use the store, but the store is up.
            log.debug("store call refused: %r", exc)
            raise self._failed("error", breaker=False) from None
        except asyncio.CancelledError:
            self.breaker.release_probe()
            raise
        self.breaker.record_success()
        return result


class GuardedStore(OnlineStore):
    """An `OnlineStore` whose `fetch` (the one read of a decision) and `guarded` calls (the
    other reads on a request's path) go through the guard."""

    def __init__(self, client: Any, schema: FeatureSchema, guard: StoreGuard,
                 **kwargs: Any) -> None:
        super().__init__(client, schema, **kwargs)
        self.guard = guard

    async def fetch(
        self,
        customer_id: str,
        now_ms: int | None = None,
        extra: Sequence[Sequence[str | bytes | int | float]] = (),
    ) -> CustomerSnapshot:
        return await self.guard.call(lambda: OnlineStore.fetch(self, customer_id, now_ms, extra))

    async def guarded(self, make: Callable[[], Awaitable[T]]) -> T:
        return await self.guard.call(make)
