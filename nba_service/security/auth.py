"""Per-call bearer-token auth with scopes: which RPCs a token may call, on which channels.

Tokens file (YAML), one entry per client; only the sha256 of a token is stored, so the file
does not hand out credentials if it leaks:

    tokens:
      - name: chat-widget
        sha256: 9f86d08...          # `nba token new` prints a token and this line
        rpcs: [nba.v1.Decisioning/Decide, nba.v1.Decisioning/EvaluateChatTrigger]
        channels: [CHAT, WEB]       # optional; absent = every channel
      - name: ops
        sha256: ...
        rpcs: ["nba.v1.Admin/*"]    # a service wildcard

A method is `package.Service/Method` (the gRPC path without the leading slash). The same
`TokenAuthority.check` serves the gRPC interceptor and the HTTP gateway.
"""

from __future__ import annotations

import contextvars
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from nba_service.reliability.handlers import reject_handler, wrap_handler
from nba_service.security.redaction import register_request, register_token

__all__ = [
    "AuthError",
    "AuthInterceptor",
    "RequestScopeInterceptor",
    "Principal",
    "TokenAuthority",
    "current_principal",
    "hash_token",
    "new_token",
]

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "nba_principal", default=None
)


def current_principal() -> Principal | None:
    return _principal.get()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """(token, its sha256) — the token goes to the client, the hash into the tokens file."""
    token = "nba_" + secrets.token_urlsafe(32)
    return token, hash_token(token)


class AuthError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = 401 if code == grpc.StatusCode.UNAUTHENTICATED else 403


@dataclass(frozen=True)
class Principal:
    name: str
    rpcs: frozenset[str]
    services: frozenset[str]
    channels: frozenset[str] | None  # None: every channel

    def may_call(self, method: str) -> bool:
        method = method.lstrip("/")
        return method in self.rpcs or method.split("/", 1)[0] in self.services

    def may_use_channel(self, channel: str) -> bool:
        return self.channels is None or channel in self.channels


class TokenAuthority:
    def __init__(self, principals: Mapping[str, Principal]) -> None:
        self._by_hash = dict(principals)

    @classmethod
    def from_file(cls, path: str | Path) -> TokenAuthority:
        try:
            doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from None
        entries = doc.get("tokens") if isinstance(doc, Mapping) else None
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{path}: needs a non-empty list 'tokens'")
        return cls(_parse_entries(entries, str(path)))

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "expected 'Bearer <token>'")
        principal = self._by_hash.get(hash_token(token.strip()))
        if principal is None:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "unknown token")
        return principal

    def check(self, authorization: str | None, method: str) -> Principal:
        """Authenticate and authorise one call of `method` (`pkg.Service/Method`)."""
        principal = self.authenticate(authorization)
        if not principal.may_call(method):
            raise AuthError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"token {principal.name!r} may not call {method.lstrip('/')}",
            )
        return principal


def _parse_entries(entries: Iterable[object], where: str) -> dict[str, Principal]:
    out: dict[str, Principal] = {}
    for i, e in enumerate(entries):
        at = f"{where}: tokens[{i}]"
        if not isinstance(e, Mapping):
            raise ValueError(f"{at}: expected a mapping")
        name, digest, rpcs = e.get("name"), e.get("sha256"), e.get("rpcs")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{at}: field 'name' is required")
        if not isinstance(digest, str) or len(digest) != 64:
            raise ValueError(f"{at}: field 'sha256' must be 64 hex characters")
        if not isinstance(rpcs, list) or not all(isinstance(r, str) and "/" in r for r in rpcs):
            raise ValueError(f"{at}: field 'rpcs' must list 'package.Service/Method' names")
        channels = e.get("channels")
        if channels is not None and (
            not isinstance(channels, list) or not all(isinstance(c, str) for c in channels)
        ):
            raise ValueError(f"{at}: field 'channels' must be a list of channel names")
        if digest.lower() in out:
            raise ValueError(f"{at}: the same token is listed twice")
        out[digest.lower()] = Principal(
            name=name,
            rpcs=frozenset(r.lstrip("/") for r in rpcs if not r.endswith("/*")),
            services=frozenset(r.lstrip("/")[:-2] for r in rpcs if r.endswith("/*")),
            channels=None if channels is None else frozenset(c.upper() for c in channels),
        )
    return out


def _metadata(details: grpc.HandlerCallDetails, key: str) -> str | None:
    for k, v in details.invocation_metadata or ():
        if k == key:
            return v if isinstance(v, str) else v.decode("latin-1")
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks `authorization: Bearer <token>` against the method before the request is read.
    Health and reflection stay open: orchestrators probe them without credentials."""

    def __init__(
        self,
        authority: TokenAuthority,
        open_prefixes: tuple[str, ...] = ("/grpc.health.v1.Health/",),
    ) -> None:
        self.authority = authority
        self.open = open_prefixes

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(self.open):
            return handler
        authorization = _metadata(details, "authorization")
        try:
            principal = self.authority.check(authorization, details.method)
        except AuthError as exc:
            return reject_handler(handler, exc.code, str(exc))
        token = authorization.partition(" ")[2].strip() if authorization else None

        def unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
                _principal.set(principal)
                register_token(token)
                return await behavior(request, context)

            return run

        def streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
            async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
                _principal.set(principal)
                register_token(token)
                async for item in behavior(request, context):
                    yield item

            return run

        return wrap_handler(handler, unary=unary, streaming=streaming)


def _channel_name(request: Any) -> str | None:
    # Requests that carry a channel: Decide, RecordOutcome, Inspect (enum), chat triggers
    # are CHAT by definition.
    from nba_service._proto.nba.v1 import decisioning_pb2 as pb

    if isinstance(request, pb.ChatTriggerRequest):
        return "CHAT"
    value = getattr(request, "channel", None)
    if isinstance(value, int) and value:
        return pb.Channel.Name(value) if value in pb.Channel.values() else None
    return None


class RequestScopeInterceptor(grpc.aio.ServerInterceptor):
    """Runs after decoding: the per-channel half of the scopes (the channel is in the body),
    and registers the request with the log redaction filter."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler

        def denied(request: Any) -> str | None:
            principal = _principal.get()
            if principal is None or principal.channels is None:
                return None
            channel = _channel_name(request)
            if channel is None or principal.may_use_channel(channel):
                return None
            return f"token {principal.name!r} may not use channel {channel}"

        def unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if handler.unary_unary is not None:
                    register_request(request)
                    problem = denied(request)
                    if problem:
                        await context.abort(grpc.StatusCode.PERMISSION_DENIED, problem)
                return await behavior(request, context)

            return run

        def streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
            async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if handler.stream_stream is not None or handler.stream_unary is not None:
                    request = _checked_stream(request, denied, context)
                else:
                    register_request(request)
                    problem = denied(request)
                    if problem:
                        await context.abort(grpc.StatusCode.PERMISSION_DENIED, problem)
                async for item in behavior(request, context):
                    yield item

            return run

        return wrap_handler(handler, unary=unary, streaming=streaming)


async def _checked_stream(
    requests: Any, denied: Callable[[Any], str | None], context: grpc.aio.ServicerContext
) -> Any:
    async for r in requests:
        register_request(r)
        problem = denied(r)
        if problem:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, problem)
        yield r
