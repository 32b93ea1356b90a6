"""Metrics bookkeeping, JSON log lines and the optional OpenTelemetry spans."""

from __future__ import annotations

import io
import json
import logging

import grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from nba_service.observability.logs import JsonFormatter, setup_logging
from nba_service.observability.metrics import Metrics, ServingState
from nba_service.observability.tracing import Tracer, record_stages
from nba_service.security.pseudonym import Pseudonymizer
from nba_service.types import Decision, DecisionRequest, RankedAction


def decision(reasons: list[str], version: str = "m1") -> Decision:
    a = RankedAction("act1", "offer", "g", 1, 1.0, 0.5, 2.0, 1.0, 1.0, {}, [], 1.0)
    return Decision("d1", [a], version, "cat1", reasons,
                    {"store": 100, "encode": 20, "score": 50, "rules": 30, "total": 210})


def test_decision_metrics_and_one_series_per_version() -> None:
    m = Metrics()
    req = DecisionRequest(customer_id="secret-customer", channel="WEB")
    m.observe_decision(req, decision(["fallback:store_unavailable", "stale_features:a,b"]))
    m.observe_decision(req, decision([], version="m2"))
    m.observe_rpc("/nba.v1.Decisioning/Decide", grpc.StatusCode.INVALID_ARGUMENT, 0.001)
    text = m.exposition().decode()
    assert 'nba_decisions_total{channel="WEB",degraded="true"} 1.0' in text
    assert 'nba_recommendations_total{action="act1",channel="WEB"} 2.0' in text
    assert 'nba_degraded_total{reason="fallback"} 1.0' in text
    assert 'nba_degraded_total{reason="stale_features"} 1.0' in text
    assert 'nba_fallback_total{channel="WEB"} 1.0' in text
    assert 'code="INVALID_ARGUMENT",method="Decide"' in text
    assert 'nba_decision_stage_duration_seconds_count{stage="store"} 2.0' in text
    assert "secret-customer" not in text


def test_serving_state_is_read_at_every_scrape() -> None:
    m = Metrics()
    state: list[ServingState | None] = [None]
    m.watch(lambda: state[0])
    assert "nba_model_version_info" not in m.exposition().decode()  # not started yet
    state[0] = ServingState([("champion", "m1", 0), ("challenger", "", 2)], "cat1", 0)
    text = m.exposition().decode()
    assert 'nba_model_version_info{slot="champion",version="m1"} 1.0' in text
    assert 'slot="challenger",version' not in text  # nothing loaded there
    assert 'nba_model_load_failures_total{slot="challenger"} 2.0' in text
    assert 'nba_catalog_version_info{version="cat1"} 1.0' in text
    # A swap shows at the next scrape, with no decision in between; the old series is gone.
    state[0] = ServingState([("champion", "m2", 1)], "cat2", 3)
    text = m.exposition().decode()
    assert 'version="m2"} 1.0' in text and 'version="m1"' not in text
    assert 'nba_model_load_failures_total{slot="champion"} 1.0' in text
    assert "nba_catalog_reload_failures_total 3.0" in text and "cat1" not in text


def test_json_log_lines_are_redacted() -> None:
    buf = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("INFO", "json", Pseudonymizer(b"k"), stream=buf)
        logging.getLogger("x").warning("auth %s", "Bearer abc.def", extra={"rpc": "Decide"})
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    doc = json.loads(buf.getvalue())
    assert doc["level"] == "WARNING" and doc["logger"] == "x" and doc["rpc"] == "Decide"
    assert "abc.def" not in doc["msg"] and doc["ts"].endswith("Z")
    assert JsonFormatter().format(logging.LogRecord("y", 20, "", 0, "m", None, None))


async def test_spans_per_rpc_and_stage() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = Tracer.create(provider)
    span = tracer.start("/nba.v1.Decisioning/Decide")
    record_stages({"store": 100, "encode": 20, "score": 50, "rules": 30, "total": 210})
    span.finish(grpc.StatusCode.UNAVAILABLE)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"nba.rpc", "nba.store", "nba.encode", "nba.score", "nba.rules"}
    rpc = spans["nba.rpc"]
    assert rpc.attributes is not None
    assert rpc.attributes["rpc.grpc.status_code"] == "UNAVAILABLE"
    assert spans["nba.store"].parent is not None
    assert spans["nba.store"].parent.span_id == rpc.context.span_id
