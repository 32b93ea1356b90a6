"""Per-request deadlines: every RPC runs under min(client deadline, server maximum).

The deadline lives in a context variable set by `DeadlineInterceptor` for the handler's task,
so the coordinator and the store wrapper read it without it being threaded through every
signature. `budget()` turns the remaining time into the timeout of the next store call; when
nothing is left, no command is sent at all.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from nba_service.reliability.handlers import wrap_handler

__all__ = [
    "BudgetExhausted",
    "Deadline",
    "DeadlineInterceptor",
    "budget",
    "current",
    "run_with_budget",
    "with_deadline",
]

T = TypeVar("T")

_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "nba_deadline", default=None
)


class BudgetExhausted(asyncio.TimeoutError):
    """Too little of the request's time budget is left to start this call."""


class Deadline:
    __slots__ = ("budget_s", "expires_at")

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.expires_at = time.monotonic() + budget_s

    def remaining(self) -> float:
        return self.expires_at - time.monotonic()

    def expired(self) -> bool:
        return time.monotonic() >= self.expires_at


def current() -> Deadline | None:
    """The deadline of the request this task serves, if any."""
    return _current.get()


def with_deadline(deadline: Deadline | None) -> contextvars.Token[Deadline | None]:
    return _current.set(deadline)


def budget(cap_s: float, reserve_s: float = 0.0) -> float:
    """Seconds the next I/O call may take: min(cap, remaining - reserve). <= 0: do not start."""
    d = _current.get()
    if d is None:
        return cap_s
    return min(cap_s, d.remaining() - reserve_s)


async def run_with_budget(
    call: Callable[[], Awaitable[T]], cap_s: float, reserve_s: float = 0.0
) -> T:
    """Run `call()` under the request's remaining budget (minus `reserve_s`, kept for what has
    to happen after the call fails, e.g. computing a fallback answer).

    Takes a factory, not a coroutine, so that nothing is created, let alone sent, when the
    budget is already spent. On timeout the call is cancelled; redis-py then drops that
    connection instead of returning it to the pool with a reply still pending.
    """
    timeout = budget(cap_s, reserve_s)
    if timeout <= 0:
        raise BudgetExhausted(f"no time budget left ({timeout * 1000:.1f} ms)")
    async with asyncio.timeout(timeout):
        return await call()


def request_budget(context: grpc.aio.ServicerContext, server_max_s: float) -> float:
    remaining = context.time_remaining()
    if remaining is None or not math.isfinite(remaining):
        return server_max_s
    return min(float(remaining), server_max_s)


class DeadlineInterceptor(grpc.aio.ServerInterceptor):
    """Binds each RPC to min(client deadline, the server maximum of its service).

    Unary calls past their budget are cancelled and answered DEADLINE_EXCEEDED. A client that
    cancels (or whose own deadline passes) makes gRPC cancel the handler task, which cancels
    any store call in flight with it.
    """

    def __init__(self, max_s: float, max_s_by_service: dict[str, float] | None = None) -> None:
        self.max_s = max_s
        self.by_service = dict(max_s_by_service or {})

    def _max_for(self, method: str) -> float:
        service = method.rsplit("/", 2)[-2] if method.count("/") >= 2 else ""
        return self.by_service.get(service, self.max_s)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        server_max = self._max_for(details.method)

        def unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
                limit = request_budget(context, server_max)
                token = _current.set(Deadline(limit))
                try:
                    async with asyncio.timeout(limit):
                        return await behavior(request, context)
                except TimeoutError:
                    await context.abort(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"deadline of {limit * 1000:.0f} ms exceeded",
                    )
                finally:
                    _current.reset(token)

            return run

        def streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
            # A stream's total length is the client's business (batch runs are long); each
            # message's store call is still capped by the store timeout.
            async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
                remaining = context.time_remaining()
                deadline = None if remaining is None else Deadline(float(remaining))
                token = _current.set(deadline)
                try:
                    async for item in behavior(request, context):
                        yield item
                finally:
                    _current.reset(token)

            return run

        return wrap_handler(handler, unary=unary, streaming=streaming)
