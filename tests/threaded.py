"""A real NbaServer on its own event loop in a background thread, for synchronous tests
(Hypothesis drives sync test functions; the server must keep running between examples)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from nba_service.runtime import Runtime
from nba_service.server import NbaServer
from nba_service.settings import Settings


class ThreadedServer:
    def __init__(self, settings: Settings,
                 runtime_factory: Callable[[Settings], Runtime] = Runtime) -> None:
        self.settings = settings
        self.runtime_factory = runtime_factory
        self.server: NbaServer | None = None
        self.target = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="nba-test-server", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.server = NbaServer(self.settings, self.runtime_factory(self.settings))
            address = await self.server.start()
            self.target = address.target
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.server.stop(grace=0.5)

    def start(self, timeout_s: float = 60) -> ThreadedServer:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("server did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
