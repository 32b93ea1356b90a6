"""The Admin service: reloads, status, the inspector and the transport floor (Echo)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import grpc

from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc

if TYPE_CHECKING:
    from nba_service.runtime import Runtime


class AdminServicer(decisioning_pb2_grpc.AdminServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusResponse:
        details = self.runtime.details()
        return pb.StatusResponse(
            ready=self.runtime.ready(),
            model_version=str(details.get("model_version") or ""),
            challenger_version=str(details.get("challenger_version") or ""),
            catalog_version=str(details.get("catalog_version") or ""),
            details={
                **{k: str(v) for k, v in details.items() if v is not None},
                # Which process answered: with several workers on one port, each connection
                # lands on one of them.
                "worker_pid": str(os.getpid()),
            },
        )

    async def ReloadModel(
        self, request: pb.ReloadModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReloadResponse:
        # A refused model is an answer, not an RPC error: the old version keeps serving.
        from nba_service.errors import NotFound

        try:
            r = await self.runtime.reload_model(request.slot or None)
        except KeyError as exc:
            raise NotFound(f"slot: {exc.args[0]}") from None
        return pb.ReloadResponse(changed=r.changed, version=r.version,
                                 previous_version=r.previous_version, error=r.error)

    async def ReloadCatalog(
        self, request: pb.ReloadCatalogRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReloadResponse:
        # A refused catalog is an answer, not an RPC error: the old version keeps serving.
        r = await self.runtime.reload_catalog()
        return pb.ReloadResponse(changed=r.changed, version=r.version,
                                 previous_version=r.previous_version, error=r.error)

    async def Echo(
        self, request: pb.EchoRequest, context: grpc.aio.ServicerContext
    ) -> pb.EchoResponse:
        return pb.EchoResponse(payload=request.payload)

    async def Inspect(
        self, request: pb.InspectRequest, context: grpc.aio.ServicerContext
    ) -> pb.InspectResponse:
        from nba_service.errors import FailedPrecondition
        from nba_service.servicer import Validator

        if self.runtime.inspector is None:
            raise FailedPrecondition("the service is not started")
        return await self.runtime.inspector.inspect(Validator(self.runtime.settings), request)
