"""The Admin service: reloads, status, the inspector and the transport floor (Echo)."""

from __future__ import annotations

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
            details={k: str(v) for k, v in details.items() if v is not None},
        )

    async def Echo(
        self, request: pb.EchoRequest, context: grpc.aio.ServicerContext
    ) -> pb.EchoResponse:
        return pb.EchoResponse(payload=request.payload)
