"""The HTTP server's lifecycle: bound in the gRPC server's event loop, no second process."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from nba_service.admin import AdminServicer
from nba_service.http.gateway import Gateway
from nba_service.observability.http import install as install_safeguards
from nba_service.security.tls import http_ssl_context
from nba_service.servicer import DecisioningServicer
from nba_service.settings import Settings

if TYPE_CHECKING:
    from nba_service.runtime import Runtime

log = logging.getLogger(__name__)

DEFAULT_HTTP_PORT = 8080
MAX_BODY_BYTES = 1 << 20  # the gRPC server's largest request message


def resolve_http_port(settings: Settings) -> int | None:
    """The port to bind, 0 for a free one, None when the gateway is disabled.

    Unset follows the gRPC port: a fixed gRPC port gets 8080, an ephemeral one (tests, the
    demo) gets an ephemeral HTTP port too, so parallel servers never collide.
    """
    port = settings.http_port
    if port is None:
        return 0 if settings.port == 0 else DEFAULT_HTTP_PORT
    return None if port < 0 else port


class HttpServer:
    """`start()` binds and serves; `stop(grace)` stops accepting and lets requests finish."""

    def __init__(self, settings: Settings, runtime: Runtime, ready: Callable[[], bool]) -> None:
        self.settings = settings
        self.gateway = Gateway(
            DecisioningServicer(runtime, settings),
            AdminServicer(runtime),
            ready,
            cors_origins=settings.http_cors_origins,
            max_body_bytes=MAX_BODY_BYTES,
            static=settings.http_demo_pages,
        )
        guards = getattr(runtime, "safeguards", None)
        if guards is not None:
            # /metrics, token scopes, shedding and deadlines, as on the gRPC port.
            install_safeguards(self.gateway.app, guards)
        self._runner: web.AppRunner | None = None
        # Built here so that a bad certificate fails the start, not the first request.
        self.ssl = (http_ssl_context(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
                    if settings.http_tls else None)
        self.host = settings.http_host or settings.host
        self.port: int | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl else 'http'}://{host}:{self.port}"

    async def start(self) -> int:
        port = resolve_http_port(self.settings)
        if port is None:
            raise ValueError("the HTTP gateway is disabled (http_port < 0)")
        runner = web.AppRunner(
            self.gateway.app, access_log=None,
            shutdown_timeout=self.settings.shutdown_grace_s,
        )
        await runner.setup()
        # Several worker processes may share the port, as they share the gRPC one.
        site = web.TCPSite(runner, self.host, port, reuse_port=port != 0,
                           ssl_context=self.ssl)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else port
        log.info("serving HTTP/JSON on %s", self.url)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
