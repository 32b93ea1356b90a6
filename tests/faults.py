"""Fault injection for tests: a loopback TCP proxy that can delay or cut a Redis connection."""

from __future__ import annotations

import asyncio
import contextlib
import time


class LatencyProxy:
    """127.0.0.1:<port> -> upstream. `reply_delay_s` holds every chunk the server sends for
    that long (commands still reach the server at once); `cut()` drops every connection and
    refuses new ones until `restore()`. Runs on the caller's event loop."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.reply_delay_s = 0.0
        self.refusing = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> LatencyProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._conns |= {writer, up_writer}
        t1 = asyncio.create_task(self._pipe(reader, up_writer, delayed=False))
        t2 = asyncio.create_task(self._pipe(up_reader, writer, delayed=True))
        self._tasks |= {t1, t2}
        await asyncio.gather(t1, t2, return_exceptions=True)
        self._tasks -= {t1, t2}
        self._conns -= {writer, up_writer}

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    delayed: bool) -> None:
        try:
            while data := await src.read(65536):
                if delayed and self.reply_delay_s > 0:
                    # Hold this chunk until its own due time; later chunks queue behind it.
                    due = time.monotonic() + self.reply_delay_s
                    while (left := due - time.monotonic()) > 0:
                        await asyncio.sleep(left)
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()

    def cut(self) -> None:
        self.refusing = True
        for w in list(self._conns):
            w.transport.abort()

    def restore(self) -> None:
        self.refusing = False

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
