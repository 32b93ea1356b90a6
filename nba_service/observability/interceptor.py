"""Times every RPC into the latency histogram by method and status code, and (when tracing is
on) wraps it in a span. Outermost interceptor, so shed and rejected calls are counted too."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from nba_service.observability.metrics import Metrics
from nba_service.observability.tracing import Tracer
from nba_service.reliability.handlers import wrap_handler

__all__ = ["MetricsInterceptor"]


def _code(context: grpc.aio.ServicerContext, failed: bool) -> grpc.StatusCode | None:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return None if code == grpc.StatusCode.OK else code
    return grpc.StatusCode.UNKNOWN if failed else None


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics, tracer: Tracer | None = None) -> None:
        self.metrics = metrics
        self.tracer = tracer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method, metrics, tracer = details.method, self.metrics, self.tracer

        def unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
                t0 = time.perf_counter()
                metrics.in_flight.inc()
                failed = True
                span = tracer.start(method) if tracer is not None else None
                try:
                    result = await behavior(request, context)
                    failed = False
                    return result
                finally:
                    metrics.in_flight.dec()
                    code = _code(context, failed)
                    metrics.observe_rpc(method, code, time.perf_counter() - t0)
                    if span is not None:
                        span.finish(code)

            return run

        def streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
            async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
                t0 = time.perf_counter()
                metrics.in_flight.inc()
                failed = True
                span = tracer.start(method) if tracer is not None else None
                try:
                    async for item in behavior(request, context):
                        yield item
                    failed = False
                finally:
                    metrics.in_flight.dec()
                    code = _code(context, failed)
                    metrics.observe_rpc(method, code, time.perf_counter() - t0)
                    if span is not None:
                        span.finish(code)

            return run

        return wrap_handler(handler, unary=unary, streaming=streaming)
