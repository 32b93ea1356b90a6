"""The one place where exceptions become gRPC status codes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from nba_service.errors import NbaError

log = logging.getLogger(__name__)

_GENERIC = "internal error; the server log has the details"


def _wrap_unary(behavior: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], name: str):  # type: ignore[no-untyped-def]
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except NbaError as exc:
            await context.abort(exc.code, str(exc))
        except grpc.aio.AbortError:
            raise
        except TimeoutError:
            # A store write or read ran out of the request's time budget.
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        except (RedisConnectionError, RedisTimeoutError):
            # Writes cannot fall back; the client retries (idempotent per event_id).
            await context.abort(grpc.StatusCode.UNAVAILABLE, "online store unavailable; retry")
        except Exception:
            # Clients never see a stack trace; the log keeps it with the method name.
            log.exception("unhandled error in %s", name)
            await context.abort(grpc.StatusCode.INTERNAL, _GENERIC)

    return wrapper


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps `NbaError` subclasses to their status code and anything else to a generic INTERNAL."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(handler.unary_unary, handler_call_details.method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
