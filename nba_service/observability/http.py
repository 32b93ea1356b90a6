"""The HTTP port's share of the safeguards: `/metrics`, and the same token scopes, load
shedding and deadlines as the gRPC port, as one aiohttp middleware.

Route scopes use the gRPC method names, so one tokens file covers both ports:
`/v1/decide` is `nba.v1.Decisioning/Decide`, `/v1/inspect` is `nba.v1.Admin/Inspect`, and
`/metrics` is `nba.v1.Admin/Metrics` (grant it, or `nba.v1.Admin/*`, to the scraper's token).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from grpc import StatusCode

from nba_service.http.gateway import GRPC_CODE, error_response
from nba_service.observability.metrics import CONTENT_TYPE_LATEST
from nba_service.reliability.deadline import Deadline, with_deadline
from nba_service.security.auth import AuthError
from nba_service.security.redaction import register_token

if TYPE_CHECKING:
    from nba_service.reliability.safeguards import Safeguards

__all__ = ["ROUTE_METHODS", "install"]

ROUTE_METHODS = {
    "/v1/decide": "nba.v1.Decisioning/Decide",
    "/v1/outcome": "nba.v1.Decisioning/RecordOutcome",
    "/v1/events": "nba.v1.Decisioning/IngestEvents",
    "/v1/chat-trigger": "nba.v1.Decisioning/EvaluateChatTrigger",
    "/v1/agent-capacity": "nba.v1.Decisioning/ReportAgentCapacity",
    "/v1/inspect": "nba.v1.Admin/Inspect",
    "/metrics": "nba.v1.Admin/Metrics",
}
_ADMIN = "nba.v1.Admin/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]




async def _channel_of(request: web.Request, method: str) -> str | None:
    if method.endswith("/EvaluateChatTrigger"):
        return "CHAT"
    if request.method == "GET":
        return request.query.get("channel")
    try:
        doc = json.loads(await request.read() or b"{}")
    except ValueError:
        return None  # the gateway answers INVALID_ARGUMENT for the body itself
    value = doc.get("channel") if isinstance(doc, dict) else None
    if isinstance(value, int):
        from nba_service._proto.nba.v1 import decisioning_pb2 as pb

        return pb.Channel.Name(value) if value in pb.Channel.values() else None
    return value if isinstance(value, str) else None


def install(app: web.Application, guards: Safeguards) -> None:
    """Add `/metrics` and the safeguards middleware; call before the app is started."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=guards.metrics.exposition(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/metrics", metrics)

    @web.middleware
    async def safeguards(request: web.Request, handler: Handler) -> web.StreamResponse:
        method = ROUTE_METHODS.get(request.path)
        if method is None or request.method == "OPTIONS":
            # Pages, static files, /healthz, and CORS preflights (browsers send those without
            # credentials; the CORS middleware outside answers them): open.
            return await handler(request)
        authority = guards.authority
        if authority is not None:
            header = request.headers.get("Authorization")
            try:
                principal = authority.check(header, method)
                channel = await _channel_of(request, method)
                if channel and not principal.may_use_channel(channel.upper()):
                    return error_response(
                        StatusCode.PERMISSION_DENIED,
                        f"token {principal.name!r} may not use channel {channel}")
            except AuthError as exc:
                return error_response(exc.code, str(exc), http_status=exc.http_status)
            register_token(header.partition(" ")[2].strip() if header else None)
        if method == ROUTE_METHODS["/metrics"]:
            return await handler(request)
        shedder = guards.shedder
        if not shedder.try_acquire():
            guards.metrics.shed.labels(method.rsplit("/", 1)[-1]).inc()
            return error_response(StatusCode.RESOURCE_EXHAUSTED,
                                  "server at capacity; retry with backoff")
        limit = (guards.settings.admin_max_deadline_s if method.startswith(_ADMIN)
                 else guards.settings.max_deadline_s)
        with_deadline(Deadline(limit))
        t0 = time.perf_counter()
        code: StatusCode | None = StatusCode.UNKNOWN  # until a response says otherwise
        try:
            async with asyncio.timeout(limit):
                resp = await handler(request)
            code = resp.get(GRPC_CODE) if resp.status >= 400 else None
            if code is None and resp.status >= 400:
                code = StatusCode.UNKNOWN
            return resp
        except TimeoutError:
            code = StatusCode.DEADLINE_EXCEEDED
            return error_response(code, f"deadline of {limit * 1000:.0f} ms exceeded")
        finally:
            shedder.release()
            guards.metrics.observe_rpc(method, code, time.perf_counter() - t0)

    # Inside the CORS middleware (the first), so refusals carry CORS headers too; outside the
    # error mapping, so every answer it sees has its status.
    app.middlewares.insert(1, safeguards)
