"""The HTTP/JSON gateway: the same engine for browsers and widgets, on the service's HTTP port."""

from nba_service.http.server import HttpServer, resolve_http_port

__all__ = ["HttpServer", "resolve_http_port"]
