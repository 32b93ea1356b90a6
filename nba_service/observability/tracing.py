"""Optional OpenTelemetry tracing (extra `otel`; off unless `NBA_TRACING=true`).

One span per RPC (`nba.rpc`, attributes `rpc.method` and `rpc.grpc.status_code`), and child
spans per decision stage recorded from the stage timings (no extra clock reads on the hot
path). With the extra not installed, `Tracer.create` says so and the service refuses to start
with tracing on, rather than silently tracing nothing.
"""

from __future__ import annotations

import contextvars
import time
from typing import Any

import grpc

__all__ = ["Span", "Tracer", "TracingUnavailable", "record_stages"]

_current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("nba_span", default=None)


def record_stages(timing: dict[str, int]) -> None:
    """Add the decision's stage spans under the current RPC span, if tracing is on."""
    span = _current.get()
    if span is not None:
        span.tracer.stages(timing, span.otel)


class TracingUnavailable(RuntimeError):
    """Tracing was asked for but the `otel` extra is not installed."""


class Span:
    __slots__ = ("otel", "tracer")

    def __init__(self, otel: Any, tracer: Tracer) -> None:
        self.otel = otel
        self.tracer = tracer

    def finish(self, code: grpc.StatusCode | None) -> None:
        from opentelemetry.trace import Status, StatusCode

        name = "OK" if code is None else code.name
        self.otel.set_attribute("rpc.grpc.status_code", name)
        if code is not None and code not in (
            grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT
        ):
            self.otel.set_status(Status(StatusCode.ERROR, name))
        self.otel.end()


class Tracer:
    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer

    @classmethod
    def create(cls, provider: Any = None, service_name: str = "nba") -> Tracer:
        """A tracer from `provider`, or from a new SDK provider that exports OTLP when the
        exporter package is installed (configured by the standard OTEL_EXPORTER_* variables,
        which the exporter itself reads)."""
        try:
            from opentelemetry import trace
        except ImportError:
            raise TracingUnavailable(
                "tracing is on but opentelemetry is not installed: pip install 'nba[otel]'"
            ) from None
        if provider is None:
            provider = _default_provider(service_name)
        return cls(trace.get_tracer("nba_service", tracer_provider=provider))

    def start(self, method: str) -> Span:
        """Start the RPC's span and make it current for this task."""
        otel = self._tracer.start_span(
            "nba.rpc", attributes={"rpc.system": "grpc", "rpc.method": method}
        )
        span = Span(otel, self)
        _current.set(span)
        return span

    def stages(self, timing: dict[str, int], parent: Any = None) -> None:
        """Child spans of the current span, one per stage, from microsecond timings."""
        from opentelemetry import trace

        ctx = trace.set_span_in_context(parent) if parent is not None else None
        end = time.time_ns()
        start = end - timing.get("total", 0) * 1000
        for stage in ("store", "encode", "score", "rules"):
            us = timing.get(stage)
            if us is None:
                continue
            s = self._tracer.start_span(f"nba.{stage}", context=ctx, start_time=start)
            start += us * 1000
            s.end(end_time=start)


def _default_provider(service_name: str) -> Any:
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise TracingUnavailable(
            "tracing is on but opentelemetry-sdk is not installed: pip install 'nba[otel]'"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        return provider
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider
