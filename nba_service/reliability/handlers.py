"""Rebuilding an RPC method handler around a wrapped behavior, for all four call kinds."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

__all__ = ["reject_handler", "wrap_handler"]

Unary = Callable[..., Awaitable[Any]]
Streaming = Callable[..., Any]


def wrap_handler(
    handler: grpc.RpcMethodHandler,
    *,
    unary: Callable[[Unary], Unary] | None = None,
    streaming: Callable[[Streaming], Streaming] | None = None,
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """The same handler with its behavior wrapped. `unary` wraps unary-response calls;
    `streaming` wraps stream-response calls (async generators). A missing wrapper keeps the
    behavior as it is."""
    deser = request_deserializer or handler.request_deserializer
    ser = handler.response_serializer
    if handler.unary_unary is not None:
        b = unary(handler.unary_unary) if unary else handler.unary_unary
        return grpc.unary_unary_rpc_method_handler(
            b, request_deserializer=deser, response_serializer=ser
        )
    if handler.stream_unary is not None:
        b = unary(handler.stream_unary) if unary else handler.stream_unary
        return grpc.stream_unary_rpc_method_handler(
            b, request_deserializer=deser, response_serializer=ser
        )
    if handler.unary_stream is not None:
        b = _stream_wrap(handler.unary_stream, unary, streaming)
        return grpc.unary_stream_rpc_method_handler(
            b, request_deserializer=deser, response_serializer=ser
        )
    b = _stream_wrap(handler.stream_stream, unary, streaming)
    return grpc.stream_stream_rpc_method_handler(
        b, request_deserializer=deser, response_serializer=ser
    )


def _stream_wrap(
    behavior: Any,
    unary: Callable[[Unary], Unary] | None,
    streaming: Callable[[Streaming], Streaming] | None,
) -> Any:
    # A stream-response behavior is either an async generator or a coroutine that writes with
    # context.write(); only the first can be iterated, the second is wrapped like a unary one.
    if inspect.isasyncgenfunction(behavior):
        return streaming(behavior) if streaming else behavior
    return unary(behavior) if unary else behavior


def reject_handler(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    """A handler of the same kind that answers `code` without parsing the request: no
    deserializer is set, so the request bytes are never decoded."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator; abort always raises

    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(streaming)
    return grpc.stream_stream_rpc_method_handler(streaming)
