"""HTTP/JSON routes over the same servicers as gRPC: canonical proto3 JSON in and out.

Every `/v1/*` call parses its body into the RPC's request message with
`google.protobuf.json_format` and hands it to the very servicer method gRPC calls, so
validation, limits and the runtime operations are the same code. Errors come back as
`{"error": {"code": <grpc code number>, "status": "<GRPC_CODE>", "message": ...}}` with the
HTTP status of that gRPC code (the mapping of google.rpc.Code).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, cast

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service.admin import AdminServicer
from nba_service.errors import NbaError
from nba_service.security.redaction import register_request
from nba_service.servicer import DecisioningServicer

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent.parent / "static"
GENERIC = "internal error; the server log has the details"

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

CORS_HEADERS = "content-type, authorization, x-request-id"

Handler = Callable[[Any, Any], Awaitable[Message]]


GRPC_CODE = web.ResponseKey("grpc_code", grpc.StatusCode)
"""Key under which an error response carries its gRPC code (for the metrics)."""


def error_response(code: grpc.StatusCode, message: str, http_status: int | None = None
                   ) -> web.Response:
    body = {"error": {"code": code.value[0], "status": code.name, "message": message}}
    resp = web.json_response(body, status=http_status or HTTP_STATUS.get(code, 500))
    resp[GRPC_CODE] = code
    return resp


def to_json(message: Message) -> web.Response:
    # Fields at their default are printed too, so browser code sees `showInvite: false`.
    body = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return web.json_response(body)


class Gateway:
    """The aiohttp application: the RPC routes, /healthz, the demo and inspector pages."""

    def __init__(
        self,
        decisioning: DecisioningServicer,
        admin: AdminServicer,
        ready: Callable[[], bool],
        cors_origins: Sequence[str] = (),
        max_body_bytes: int = 1 << 20,
        static: bool = True,
    ) -> None:
        self.ready = ready
        self.cors_origins = frozenset(cors_origins)
        self.app = web.Application(
            client_max_size=max_body_bytes, middlewares=[self._cors, self._errors]
        )
        routes: list[tuple[str, type[Message], Handler]] = [
            ("/v1/decide", pb.DecideRequest, decisioning.Decide),
            ("/v1/outcome", pb.RecordOutcomeRequest, decisioning.RecordOutcome),
            ("/v1/events", pb.IngestEventsRequest, decisioning.IngestEvents),
            ("/v1/chat-trigger", pb.ChatTriggerRequest, decisioning.EvaluateChatTrigger),
            ("/v1/agent-capacity", pb.AgentCapacityRequest, decisioning.ReportAgentCapacity),
        ]
        for path, message, method in routes:
            self.app.router.add_post(path, self._rpc(message, method))
        # The inspector has its own route (and will get its own auth scope): Admin data.
        inspect = self._rpc(pb.InspectRequest, admin.Inspect)
        self.app.router.add_post("/v1/inspect", inspect)
        self.app.router.add_get("/v1/inspect", self._inspect_get(admin.Inspect))
        self.app.router.add_get("/healthz", self._healthz)
        if static:
            self.app.router.add_get("/", self._redirect("/demo"))
            self.app.router.add_get("/demo", self._page("demo.html"))
            self.app.router.add_get("/inspector", self._page("inspector.html"))
            self.app.router.add_static("/static/", STATIC, follow_symlinks=False)

    # ------------------------------------------------------------------ routes
    def _rpc(self, message: type[Message], method: Handler) -> Callable[[web.Request],
                                                                       Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            if not self.ready():
                return error_response(grpc.StatusCode.UNAVAILABLE, "the service is not ready")
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return error_response(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                      "body: request body too large", http_status=413)
            req = message()
            try:
                doc = json.loads(raw) if raw.strip() else {}
            except ValueError as exc:
                return error_response(grpc.StatusCode.INVALID_ARGUMENT, f"body: not JSON: {exc}")
            if not isinstance(doc, dict):
                return error_response(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"body: expected a JSON object ({message.DESCRIPTOR.name}), "
                    f"got {type(doc).__name__}")
            try:
                json_format.ParseDict(doc, req)
            except (ValueError, json_format.ParseError) as exc:
                return error_response(grpc.StatusCode.INVALID_ARGUMENT, f"body: {exc}")
            register_request(req)  # what the log redaction must keep out, as on gRPC
            # The servicers do not touch the gRPC context; HTTP has none to give them.
            return to_json(await method(req, cast(Any, None)))

        return handle

    def _inspect_get(self, method: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            if not self.ready():
                return error_response(grpc.StatusCode.UNAVAILABLE, "the service is not ready")
            q = request.query
            channel = q.get("channel", "CHANNEL_UNSPECIFIED")
            if channel not in pb.Channel.keys():  # noqa: SIM118 (an EnumTypeWrapper)
                return error_response(grpc.StatusCode.INVALID_ARGUMENT,
                                      f"channel: unknown channel {channel!r}")
            req = pb.InspectRequest(customer_id=q.get("customer_id", ""),
                                    placement=q.get("placement", ""),
                                    channel=cast(Any, channel))
            register_request(req)
            return to_json(await method(req, cast(Any, None)))

        return handle

    async def _healthz(self, request: web.Request) -> web.Response:
        if self.ready():
            return web.json_response({"status": "SERVING"})
        return web.json_response({"status": "NOT_SERVING"}, status=503)

    @staticmethod
    def _page(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return web.FileResponse(STATIC / name)

        return handle

    @staticmethod
    def _redirect(to: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(to)

        return handle

    # ------------------------------------------------------------- middleware
    def _allowed(self, origin: str | None) -> bool:
        return origin is not None and ("*" in self.cors_origins or origin in self.cors_origins)

    @web.middleware
    async def _cors(self, request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and request.path.startswith("/v1/"):
            if not self._allowed(origin):
                return error_response(grpc.StatusCode.PERMISSION_DENIED,
                                      f"origin {origin!r} is not allowed (NBA_HTTP_CORS_ORIGINS)")
            resp: web.StreamResponse = web.Response(status=204)
            resp.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            resp.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
            resp.headers["Access-Control-Max-Age"] = "600"
        else:
            resp = await handler(request)
        if self._allowed(origin):
            assert origin is not None
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Vary"] = "Origin"
        return resp

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        try:
            return await handler(request)
        except NbaError as exc:
            return error_response(exc.code, str(exc))
        except TimeoutError:
            # A store write or read ran out of the request's time budget (as on gRPC).
            return error_response(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        except (RedisConnectionError, RedisTimeoutError):
            # Writes cannot fall back; the client retries (idempotent per event_id).
            return error_response(grpc.StatusCode.UNAVAILABLE, "online store unavailable; retry")
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = next((c for c, s in HTTP_STATUS.items() if s == exc.status),
                        grpc.StatusCode.UNIMPLEMENTED if exc.status == 405
                        else grpc.StatusCode.UNKNOWN)
            return error_response(code, exc.reason, http_status=exc.status)
        except Exception:
            # Clients never see a stack trace; the log keeps it with the route.
            log.exception("unhandled error in %s %s", request.method, request.path)
            return error_response(grpc.StatusCode.INTERNAL, GENERIC)
