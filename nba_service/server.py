"""gRPC server lifecycle: one small class that starts and stops everything it owns."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from nba_service._proto.nba.v1 import decisioning_pb2, decisioning_pb2_grpc
from nba_service.admin import AdminServicer
from nba_service.http import HttpServer, resolve_http_port
from nba_service.interceptors import ErrorInterceptor
from nba_service.reliability.safeguards import Safeguards
from nba_service.runtime import Runtime
from nba_service.servicer import DecisioningServicer
from nba_service.settings import Settings

log = logging.getLogger(__name__)

SERVICE_NAME = decisioning_pb2.DESCRIPTOR.services_by_name["Decisioning"].full_name
ADMIN_SERVICE_NAME = decisioning_pb2.DESCRIPTOR.services_by_name["Admin"].full_name


@dataclass
class BoundAddress:
    host: str
    port: int

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


class NbaServer:
    """Owns the gRPC server, health and the runtime; `start()` and `stop(grace)` and nothing else.

    Health stays NOT_SERVING until the runtime has a model and a catalog and its kernels are
    compiled, so that no request ever pays for loading or JIT compilation.
    """

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self.address: BoundAddress | None = None
        # The HTTP/JSON gateway shares this loop; /healthz reports what gRPC health reports.
        self.http: HttpServer | None = None
        self._serving = False
        # Shared with the runtime (store breaker, metrics); a runtime without them gets its own.
        guards = getattr(runtime, "safeguards", None)
        self.safeguards: Safeguards = guards if guards is not None else Safeguards(settings)

    async def start(self) -> BoundAddress:
        guards = self.safeguards
        server = grpc.aio.server(
            # Metrics, auth, admission (shedding, decoding), deadline, scopes, then errors.
            interceptors=[
                *guards.interceptors(getattr(self.runtime, "started", self.runtime.ready)),
                ErrorInterceptor(),
            ],
            options=[("grpc.so_reuseport", 1), *guards.server_options()],
        )
        decisioning_pb2_grpc.add_DecisioningServicer_to_server(
            DecisioningServicer(self.runtime, self.settings), server
        )
        decisioning_pb2_grpc.add_AdminServicer_to_server(AdminServicer(self.runtime), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, ADMIN_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
            server,
        )
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        port = guards.bind(server, f"{self.settings.host}:{self.settings.port}")
        if port == 0:
            raise OSError(f"cannot bind {self.settings.host}:{self.settings.port}")
        await server.start()
        self.safeguards.start()
        self._server = server
        self.address = BoundAddress(self.settings.host, port)
        # A catalog reload can change readiness (e.g. a channel gains its fallback set).
        self.runtime.on_change = self.refresh_health
        try:
            if resolve_http_port(self.settings) is not None:
                self.http = HttpServer(self.settings, self.runtime, lambda: self._serving)
                await self.http.start()
            await self.runtime.start()
        except BaseException:
            await self.stop(grace=0)
            raise
        await self.refresh_health()
        log.info("serving nba.v1.Decisioning on %s", self.address.target)
        return self.address

    async def refresh_health(self) -> None:
        ready = self.runtime.ready()
        self._serving = ready and self._server is not None
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self._set_health(status)

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        await self.health.set("", status)
        await self.health.set(SERVICE_NAME, status)

    async def stop(self, grace: float | None = None) -> None:
        if self._server is None:
            return
        grace = self.settings.shutdown_grace_s if grace is None else grace
        # Load balancers see NOT_SERVING first and stop routing here; then in-flight RPCs drain.
        await self.health.enter_graceful_shutdown()
        self._serving = False
        loop = asyncio.get_running_loop()
        until = loop.time() + grace
        if self.settings.drain_s > 0 and grace > 0:
            # Deliberate: routing tables (kube-proxy, LB health checks) lag the health status.
            await asyncio.sleep(min(self.settings.drain_s, grace))
        # New calls get a retryable UNAVAILABLE while the ones in flight finish.
        left = await self.safeguards.drain(max(until - loop.time(), 0.0))
        if left:
            log.warning("%d calls still in flight after the %.1f s grace", left, grace)
        await self._server.stop(max(until - loop.time(), 0.0))
        await self.safeguards.stop()
        if self.http is not None:
            await self.http.stop()
            self.http = None
        self._server = None
        await self.runtime.stop()
        log.info("server stopped")

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()
