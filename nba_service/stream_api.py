"""DecideStream: many decisions over one bidirectional stream, answered in request order.

A reader task validates each request and starts its decision at once; up to `window` decisions
run concurrently (their store round trips overlap), and responses leave strictly in request
order. A client may also talk ping-pong (send one, wait for its answer): the reader never waits
for the writer. A bad request ends the stream with its status code, the message naming the
request's position and the field; every response before it has been sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service.errors import NbaError
from nba_service.types import Decision

if TYPE_CHECKING:
    from nba_service.runtime import Runtime
    from nba_service.servicer import Validator

log = logging.getLogger(__name__)

WINDOW = 64


class _Failed:
    def __init__(self, index: int, exc: BaseException) -> None:
        self.index = index
        self.exc = exc


async def decide_stream(
    runtime: Runtime,
    validate: Validator,
    requests: AsyncIterator[pb.DecideRequest],
    context: grpc.aio.ServicerContext,
    window: int = WINDOW,
) -> AsyncIterator[pb.DecideResponse]:
    from nba_service.servicer import to_response

    queue: asyncio.Queue[asyncio.Task[Decision] | _Failed | None] = asyncio.Queue(window)

    async def reader() -> None:
        i = 0
        try:
            async for r in requests:
                try:
                    req = validate.decide(r)
                except NbaError as exc:
                    await queue.put(_Failed(i, exc))
                    return
                await queue.put(asyncio.create_task(runtime.decide(req)))
                i += 1
        except Exception as exc:  # the client's side of the stream broke
            await queue.put(_Failed(i, exc))
            return
        await queue.put(None)

    feeder = asyncio.create_task(reader(), name="decide-stream-reader")
    index = 0
    try:
        while True:
            item = await queue.get()
            if item is None:
                return
            if isinstance(item, _Failed):
                await _abort(context, item.index, item.exc)
                return
            try:
                decision = await item
            except Exception as exc:
                await _abort(context, index, exc)
                return
            yield to_response(decision)
            index += 1
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
        while not queue.empty():
            left = queue.get_nowait()
            if isinstance(left, asyncio.Task):
                left.cancel()


async def _abort(context: grpc.aio.ServicerContext, index: int, exc: BaseException) -> None:
    if isinstance(exc, NbaError):
        await context.abort(exc.code, f"request {index}: {exc}")
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        await context.abort(grpc.StatusCode.UNAVAILABLE, "online store unavailable; retry")
    log.error("DecideStream request %d failed", index, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")
