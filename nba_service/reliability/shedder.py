"""Admission control: bounded in-flight requests, refused before the request is even parsed.

The interceptor installs an identity deserializer, so gRPC hands the behavior raw bytes. The
behavior then, with no await in between: checks the gate (ready / draining), checks and takes
an in-flight slot, and only then decodes the request. An excess request therefore costs a
counter comparison and a status, never a protobuf parse or any I/O; and because the slot is
taken and released inside one try/finally, a call that never reaches its behavior (client gone
before the message arrived) cannot leak a slot.

Undecodable bytes become INVALID_ARGUMENT instead of gRPC's generic UNKNOWN.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from nba_service.reliability.handlers import wrap_handler

__all__ = ["AdmissionInterceptor", "LagMonitor", "LoadShedder"]

Gate = Callable[[str], "tuple[grpc.StatusCode, str] | None"]


class LoadShedder:
    """The in-flight counter; one per process (one event loop), so no lock is needed."""

    def __init__(self, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.shed = 0
        self.admitted = 0
        self.last_arrival = 0.0  # monotonic time of the latest call, admitted or not

        # Set by LagMonitor: the event loop runs late, i.e. calls queue in front of admission
        # (in gRPC's own queue), where the in-flight count cannot see them.
        self.lagging = False

    def try_acquire(self) -> bool:
        # While the loop lags, only a core of calls is admitted: refusing the rest is cheap,
        # so the queue in front of us drains and admitted calls keep their latency.
        limit = max(1, self.max_in_flight // 4) if self.lagging else self.max_in_flight
        if self.in_flight >= limit:
            self.shed += 1
            return False
        self.in_flight += 1
        self.admitted += 1
        return True

    def release(self) -> None:
        self.in_flight -= 1


class LagMonitor:
    """Measures how late the event loop wakes up from a short sleep (a queue's sojourn time,
    as CoDel uses it) and tells the shedder when it stays above `max_lag_s`."""

    def __init__(self, shedder: LoadShedder, max_lag_s: float, interval_s: float = 0.005
                 ) -> None:
        self.shedder = shedder
        self.max_lag_s = max_lag_s
        self.interval_s = interval_s
        self.lag_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(self.interval_s)
            lag = time.monotonic() - t0 - self.interval_s
            # Smoothed so one slow callback does not flip the state; rises faster than it
            # falls, so an overload is answered at once and released with some hysteresis.
            alpha = 0.5 if lag > self.lag_s else 0.1
            self.lag_s += alpha * (lag - self.lag_s)
            self.shedder.lagging = self.lag_s > self.max_lag_s

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="loop-lag-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self.shedder.lagging = False


def _identity(data: bytes) -> bytes:
    return data


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Gate, shed, then decode. `exempt` methods (health checks) are never shed or gated:
    an orchestrator must be able to see a busy server is alive."""

    def __init__(
        self,
        shedder: LoadShedder,
        gate: Gate | None = None,
        exempt_prefixes: tuple[str, ...] = ("/grpc.health.v1.Health/", "/grpc.reflection."),
        on_shed: Callable[[str], None] | None = None,
    ) -> None:
        self.shedder = shedder
        self.gate = gate
        self.exempt = exempt_prefixes
        self.on_shed = on_shed

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(self.exempt):
            return handler
        decode = handler.request_deserializer
        shedder, gate, on_shed = self.shedder, self.gate, self.on_shed
        unary_request = handler.unary_unary is not None or handler.unary_stream is not None

        def parse(data: Any) -> Any:
            if decode is None or not isinstance(data, bytes | bytearray):
                return data
            try:
                return decode(data)
            except (DecodeError, ValueError, UnicodeDecodeError) as exc:
                raise _BadRequest(f"request: not a valid message for {method}: {exc}") from None

        async def refuse(context: grpc.aio.ServicerContext) -> None:
            shedder.last_arrival = time.monotonic()
            if gate is not None:
                closed = gate(method)
                if closed is not None:
                    await context.abort(*closed)
            if not shedder.try_acquire():
                if on_shed is not None:
                    on_shed(method)
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"server at capacity ({shedder.max_in_flight} requests in flight); retry "
                    "with backoff",
                )

        def unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await refuse(context)
                try:
                    try:
                        message = parse(request) if unary_request else request
                    except _BadRequest as exc:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                    return await behavior(message, context)
                finally:
                    shedder.release()

            return run

        def streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
            async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await refuse(context)
                try:
                    try:
                        message = parse(request) if unary_request else request
                    except _BadRequest as exc:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                    async for item in behavior(message, context):
                        yield item
                finally:
                    shedder.release()

            return run

        # Stream requests keep their deserializer (each message is decoded by gRPC as it
        # arrives); unary requests get raw bytes and are decoded after admission.
        return wrap_handler(
            handler,
            unary=unary,
            streaming=streaming,
            request_deserializer=_identity if unary_request else decode,
        )


class _BadRequest(Exception):
    pass
