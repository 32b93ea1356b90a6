"""Prometheus metrics of one server process, in a registry of its own.

A registry per `Metrics` object (not the global default) lets several servers live in one
process (tests, multi-worker supervisors) without clashing. Label values are bounded: RPC
names, stage names, channels, catalog action ids, feature names and reason *kinds* (the part of
a degraded reason before the colon), never customer ids or free text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from nba_service.store.online import CustomerSnapshot
    from nba_service.types import Decision, DecisionRequest

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# Microsecond-scale hot path up to the slowest acceptable answer.
_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)
STAGES = ("store", "encode", "score", "rules", "total")


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
        self.model_version = Gauge(
            "nba_model_version_info", "1 for the model version being served.", ("version",),
            registry=r,
        )
        self.catalog_version = Gauge(
            "nba_catalog_version_info", "1 for the catalog version being served.", ("version",),
            registry=r,
        )
        self.features = Counter(
            "nba_feature_problems_total",
            "Features imputed at decision time, by feature and kind (missing or stale).",
            ("feature", "kind"), registry=r,
        )
        self._versions: dict[str, str] = {}

    # -- hooks -----------------------------------------------------------------------------

    def observe_rpc(self, method: str, code: grpc.StatusCode | None, seconds: float) -> None:
        name = method.rsplit("/", 1)[-1] if method else "unknown"
        label = "OK" if code is None else code.name
        self.rpc_latency.labels(name, label).observe(seconds)

    def observe_decision(self, req: DecisionRequest, d: Decision) -> None:
        degraded = bool(d.degraded_reasons)
        self.decisions.labels(req.channel, "true" if degraded else "false").inc()
        for a in d.actions:
            self.recommendations.labels(req.channel, a.action_id).inc()
        for reason in d.degraded_reasons:
            kind = reason.split(":", 1)[0]
            self.degraded.labels(kind).inc()
            if kind == "fallback":
                self.fallbacks.labels(req.channel).inc()
        for stage in STAGES:
            us = d.timing.get(stage)
            if us is not None:
                self.stage_latency.labels(stage).observe(us / 1e6)
        self.set_version("model", d.model_version)
        self.set_version("catalog", d.catalog_version)

    def observe_snapshot(self, snap: CustomerSnapshot) -> None:
        self._count_features(snap.missing, "missing")
        self._count_features(snap.stale, "stale")

    def _count_features(self, names: Iterable[str], kind: str) -> None:
        for n in names:
            self.features.labels(n, kind).inc()

    def set_version(self, what: str, version: str | None) -> None:
        """Keep exactly one labelled series at 1 per kind: the version being served now."""
        version = version or ""
        old = self._versions.get(what)
        if old == version:
            return
        gauge = self.model_version if what == "model" else self.catalog_version
        if old is not None:
            gauge.remove(old)
        gauge.labels(version).set(1)
        self._versions[what] = version

    def breaker_changed(self, state: int) -> None:
        self.breaker_state.set(int(state))
        if int(state) == 2:
            self.breaker_opened.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
