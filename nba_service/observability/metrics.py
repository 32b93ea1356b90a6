"""Prometheus metrics of one server process, in a registry of its own.

A registry per `Metrics` object (not the global default) lets several servers live in one
process (tests, multi-worker supervisors) without clashing. Label values are bounded: RPC
names, stage names, channels, catalog action ids, feature names and reason *kinds* (the part of
a degraded reason before the colon), never customer ids or free text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from nba_service.store.online import CustomerSnapshot
    from nba_service.types import Decision, DecisionRequest

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "ServingState"]

# Microsecond-scale hot path up to the slowest acceptable answer.
_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)
STAGES = ("store", "encode", "score", "rules", "total")


@dataclass(frozen=True)
class ServingState:
    models: Sequence[tuple[str, str, int]]  # (slot, version being served or "", load failures)
    catalog_version: str
    catalog_reload_failures: int


class _ServingCollector:
    def __init__(self, source: Callable[[], ServingState | None]) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        return []  # nothing to call the source for before the runtime started

    def collect(self) -> Iterator[Metric]:
        st = self._source()
        if st is None:
            return
        served = GaugeMetricFamily("nba_model_version_info",
                                   "1 for the model version each slot serves.",
                                   labels=["slot", "version"])
        failures = CounterMetricFamily("nba_model_load_failures",
                                       "Model versions refused (hash, schema, golden set, "
                                       "signature), by slot; the old one kept serving.",
                                       labels=["slot"])
        for slot, version, failed in st.models:
            if version:
                served.add_metric([slot, version], 1)
            failures.add_metric([slot], failed)
        yield served
        yield failures
        catalog = GaugeMetricFamily("nba_catalog_version_info",
                                    "1 for the catalog version being served.", labels=["version"])
        catalog.add_metric([st.catalog_version], 1)
        yield catalog
        yield CounterMetricFamily("nba_catalog_reload_failures",
                                  "Catalog files refused at reload; the old one kept serving.",
                                  value=st.catalog_reload_failures)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.rpc_latency = Histogram(
            "nba_rpc_duration_seconds", "Server-side time per RPC, by method and status code.",
            ("method", "code"), buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.stage_latency = Histogram(
            "nba_decision_stage_duration_seconds", "Time per stage of one decision.",
            ("stage",), buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.decisions = Counter(
            "nba_decisions_total", "Decisions served, by channel and whether degraded.",
            ("channel", "degraded"), registry=r,
        )
        self.recommendations = Counter(
            "nba_recommendations_total", "Actions served, by channel and action.",
            ("channel", "action"), registry=r,
        )
        self.degraded = Counter(
            "nba_degraded_total", "Degraded decisions, by reason kind.", ("reason",), registry=r,
        )
        self.fallbacks = Counter(
            "nba_fallback_total", "Decisions answered from the channel's fallback set.",
            ("channel",), registry=r,
        )
        self.breaker_state = Gauge(
            "nba_store_breaker_state", "Store circuit breaker: 0 closed, 1 half-open, 2 open.",
            registry=r,
        )
        self.breaker_opened = Counter(
            "nba_store_breaker_opened_total", "Times the store breaker opened.", registry=r,
        )
        self.store_failures = Counter(
            "nba_store_failures_total", "Store calls that failed, by kind.", ("kind",),
            registry=r,
        )
        self.shed = Counter(
            "nba_shed_total", "Requests refused RESOURCE_EXHAUSTED by load shedding.",
            ("method",), registry=r,
        )
        self.in_flight = Gauge(
            "nba_in_flight_requests", "Requests being served now.", registry=r,
        )
        self.features = Counter(
            "nba_feature_problems_total",
            "Features imputed at decision time, by feature and kind (missing or stale).",
            ("feature", "kind"), registry=r,
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    # -- hooks -----------------------------------------------------------------------------

    def observe_rpc(self, method: str, code: grpc.StatusCode | None, seconds: float) -> None:
        name = method.rsplit("/", 1)[-1] if method else "unknown"
        label = "OK" if code is None else code.name
        self._child(self.rpc_latency, name, label).observe(seconds)

    def _child(self, metric: Any, *labels: str) -> Any:
        # `labels()` takes a lock and builds a key on every call; a decision touches about 15
        # series, so their children are looked up once and kept.
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_decision(self, req: DecisionRequest, d: Decision) -> None:
        degraded = bool(d.degraded_reasons)
        self._child(self.decisions, req.channel, "true" if degraded else "false").inc()
        for a in d.actions:
            self._child(self.recommendations, req.channel, a.action_id).inc()
        for reason in d.degraded_reasons:
            kind = reason.split(":", 1)[0]
            self._child(self.degraded, kind).inc()
            if kind == "fallback":
                self._child(self.fallbacks, req.channel).inc()
        timing = d.timing
        for stage in STAGES:
            us = timing.get(stage)
            if us is not None:
                self._child(self.stage_latency, stage).observe(us / 1e6)

    def observe_snapshot(self, snap: CustomerSnapshot) -> None:
        self._count_features(snap.missing, "missing")
        self._count_features(snap.stale, "stale")

    def _count_features(self, names: Iterable[str], kind: str) -> None:
        for n in names:
            self.features.labels(n, kind).inc()

    def watch(self, source: Callable[[], ServingState | None]) -> None:
        """Report what `source` says is served (and refused) at every scrape: versions are
        right after a swap even with no traffic, and a refused model or catalog shows up."""
        self.registry.register(_ServingCollector(source))

    def breaker_changed(self, state: int) -> None:
        self.breaker_state.set(int(state))
        if int(state) == 2:
            self.breaker_opened.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
