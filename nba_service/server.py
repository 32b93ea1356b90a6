"""gRPC server lifecycle: one small class that starts and stops everything it owns."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from nba_service._proto.nba.v1 import decisioning_pb2, decisioning_pb2_grpc
from nba_service.admin import AdminServicer
from nba_service.interceptors import ErrorInterceptor
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

    async def start(self) -> BoundAddress:
        server = grpc.aio.server(
            interceptors=[ErrorInterceptor()],
            options=[
                ("grpc.so_reuseport", 1),
                ("grpc.max_receive_message_length", 1 << 20),
            ],
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
        port = server.add_insecure_port(f"{self.settings.host}:{self.settings.port}")
        if port == 0:
            raise OSError(f"cannot bind {self.settings.host}:{self.settings.port}")
        await server.start()
        self._server = server
        self.address = BoundAddress(self.settings.host, port)
        try:
            await self.runtime.start()
        except BaseException:
            await self.stop(grace=0)
            raise
        await self.refresh_health()
        log.info("serving nba.v1.Decisioning on %s", self.address.target)
        return self.address

    async def refresh_health(self) -> None:
        ready = self.runtime.ready()
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
        await self._server.stop(grace)
        self._server = None
        await self.runtime.stop()
        log.info("server stopped")

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()
