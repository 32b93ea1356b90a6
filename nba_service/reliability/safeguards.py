"""The reliability, security and observability objects of one server process, built from the
settings in one place: what the server's interceptor chain, the runtime's store access and the
HTTP port share."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from features.schema import FeatureSchema
from nba_service.observability.interceptor import MetricsInterceptor
from nba_service.observability.metrics import Metrics
from nba_service.observability.tracing import Tracer, record_stages
from nba_service.reliability.breaker import BreakerConfig, BreakerState, CircuitBreaker
from nba_service.reliability.deadline import DeadlineInterceptor
from nba_service.reliability.shedder import AdmissionInterceptor, LagMonitor, LoadShedder
from nba_service.reliability.store_guard import GuardedStore, StoreGuard
from nba_service.security.auth import AuthInterceptor, RequestScopeInterceptor, TokenAuthority
from nba_service.security.tls import server_credentials
from nba_service.settings import Settings
from nba_service.types import Decision, DecisionRequest

__all__ = ["Safeguards"]

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1 << 20
"""Largest request accepted (gRPC refuses bigger ones with RESOURCE_EXHAUSTED unparsed)."""

QUIET_S = 0.05
"""Drain ends once no call arrived for this long (and none is in flight)."""

_DECISIONING = "nba.v1.Decisioning"
_ADMIN = "nba.v1.Admin"


class Safeguards:
    def __init__(self, settings: Settings) -> None:
        s = self.settings = settings
        self.metrics = Metrics()
        self.breaker = CircuitBreaker(
            BreakerConfig(
                window_s=s.breaker_window_s, min_calls=s.breaker_min_calls,
                error_rate=s.breaker_error_rate, open_s=s.breaker_open_s,
                half_open_probes=s.breaker_probes,
            ),
            on_change=self._breaker_changed,
        )
        self.metrics.breaker_changed(BreakerState.CLOSED)
        self.store_guard = StoreGuard(
            self.breaker, cap_s=s.redis_timeout_s, reserve_s=s.deadline_reserve_s,
            on_failure=lambda kind: self.metrics.store_failures.labels(kind).inc(),
        )
        self.shedder = LoadShedder(s.max_in_flight)
        self.lag_monitor = LagMonitor(self.shedder, s.max_loop_lag_s) if s.max_loop_lag_s else None
        self.authority = (
            TokenAuthority.from_file(s.auth_tokens_file) if s.auth_tokens_file else None
        )
        self.tracer = Tracer.create() if s.tracing else None
        self.model_verifier = _model_verifier(s.model_public_key)
        self.draining = False

    def _breaker_changed(self, state: BreakerState) -> None:
        self.metrics.breaker_changed(state)
        log.warning("store circuit breaker is now %s", state.name)

    def guard_store(self, client: Any, schema: FeatureSchema) -> GuardedStore:
        store = GuardedStore(client, schema, self.store_guard)
        store.observer = self.metrics.observe_snapshot
        return store

    def observe_decision(self, req: DecisionRequest, decision: Decision) -> None:
        self.metrics.observe_decision(req, decision)
        if self.tracer is not None:
            record_stages(decision.timing)

    def interceptors(self, started: Callable[[], bool]) -> list[grpc.aio.ServerInterceptor]:
        """Outermost first: metrics see every call; auth refuses before the request is read;
        admission gates, sheds and only then decodes; the deadline starts; channel scopes and
        log redaction see the decoded request."""

        def gate(method: str) -> tuple[grpc.StatusCode, str] | None:
            if not method.startswith(f"/{_DECISIONING}/"):
                return None
            # The port opens before the runtime has started (so the bind fails fast); calls in
            # that window get a retryable status, not an error from a half-built runtime.
            if not started():
                return grpc.StatusCode.UNAVAILABLE, "server is starting; retry"
            if self.draining:
                return grpc.StatusCode.UNAVAILABLE, "server is shutting down; retry"
            return None

        chain: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor(self.metrics, self.tracer)]
        if self.authority is not None:
            chain.append(AuthInterceptor(self.authority))
        chain += [
            AdmissionInterceptor(
                self.shedder, gate,
                on_shed=lambda m: self.metrics.shed.labels(m.rsplit("/", 1)[-1]).inc(),
            ),
            DeadlineInterceptor(
                self.settings.max_deadline_s, {_ADMIN: self.settings.admin_max_deadline_s}
            ),
            RequestScopeInterceptor(),
        ]
        return chain

    def start(self) -> None:
        """Background tasks, started with the server."""
        if self.lag_monitor is not None:
            self.lag_monitor.start()

    async def stop(self) -> None:
        if self.lag_monitor is not None:
            await self.lag_monitor.stop()

    async def drain(self, timeout_s: float) -> int:
        """Refuse new Decisioning calls (UNAVAILABLE, which clients retry elsewhere) and wait
        until the calls in flight are done. gRPC's own stop() cancels calls still queued, so
        the server is stopped only once this returns. Returns the calls still in flight."""
        self.draining = True
        until = time.monotonic() + timeout_s
        # Done when nothing is in flight and no call arrived for QUIET_S: calls gRPC has
        # accepted but not yet handed to us would otherwise be cancelled by stop().
        while time.monotonic() < until and (
            self.shedder.in_flight > 0
            or time.monotonic() - self.shedder.last_arrival < QUIET_S
        ):
            await asyncio.sleep(0.005)  # polls the condition, bounded by the grace period
        return self.shedder.in_flight

    def server_options(self) -> list[tuple[str, int]]:
        opts = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", 4 * MAX_MESSAGE_BYTES),
        ]
        if self.settings.max_pending:
            # gRPC's core refuses calls beyond these, at random above the soft limit and all
            # above the hard one, without waking Python: a queue in front of admission that
            # stays short, so admitted calls keep their latency under overload.
            pending = self.settings.max_pending
            opts += [("grpc.server.max_pending_requests", pending),
                     ("grpc.server.max_pending_requests_hard_limit", 2 * pending)]
        return opts

    def bind(self, server: grpc.aio.Server, address: str) -> int:
        """Add the port, over TLS / mTLS when configured. Returns the bound port (0: failed)."""
        s = self.settings
        creds = server_credentials(s.tls_cert, s.tls_key, s.tls_client_ca)
        if creds is None:
            if self.authority is None and s.host not in ("127.0.0.1", "localhost", "::1"):
                log.warning("serving on %s without TLS and without token auth", s.host)
            return server.add_insecure_port(address)
        return server.add_secure_port(address, creds)


def _model_verifier(public_key: Path | None) -> Callable[[Path], None] | None:
    if public_key is None:
        return None
    from nba_service.security.signing import load_public_key, verify_artifact

    key = load_public_key(Path(public_key).read_bytes())

    def verify(path: Path) -> None:
        verify_artifact(path, key)

    return verify
