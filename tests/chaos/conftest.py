"""Chaos fixtures: a valkey-server that can be SIGKILLed and restarted on the same unix socket,
and a client that sends Decide back to back recording every answer."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.client import build_request
from nba_service.store.embedded import find_server_binary

# The integration fixtures (real model, catalog, customers, store) serve the chaos tests too.
from tests.integration.conftest import (  # noqa: F401
    demo_catalog,
    demo_customers,
    model_artifact,
    server_store,
)


class KillableValkey:
    """A real valkey-server on a fixed unix socket path, so a restart is the same address."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.socket = directory / "v.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [find_server_binary(), "--port", "0", "--unixsocket", str(self.socket),
             "--unixsocketperm", "700", "--dir", str(self.dir), "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
        deadline = time.monotonic() + 10
        try:
            while True:
                with contextlib.suppress(redis.ConnectionError, FileNotFoundError):
                    if client.ping():
                        return
                assert self.proc.poll() is None, "valkey exited during start-up"
                assert time.monotonic() < deadline, "valkey did not answer PING"
                time.sleep(0.01)
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KillableValkey]:
    # Short path: unix socket paths are limited to 107 bytes.
    import tempfile

    with tempfile.TemporaryDirectory(prefix="nba-chaos-") as d:
        v = KillableValkey(Path(d))
        v.start()
        yield v
        v.kill()


class Load:
    """`workers` concurrent loops of Decide; records (time, degraded reasons) or the error."""

    def __init__(self, stub: decisioning_pb2_grpc.DecisioningStub, customers: list[str],
                 workers: int = 4, timeout_s: float = 0.5) -> None:
        self.stub = stub
        self.customers = customers
        self.workers = workers
        self.timeout_s = timeout_s
        self.answers: list[tuple[float, list[str], str]] = []
        self.failures: list[str] = []
        self.failure_times: list[float] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _run(self, w: int) -> None:
        i = w
        while not self._stop.is_set():
            cid = self.customers[i % len(self.customers)]
            i += self.workers
            try:
                resp = await self.stub.Decide(build_request(cid, "WEB"), timeout=self.timeout_s)
            except grpc.aio.AioRpcError as exc:
                self.failures.append(f"{exc.code().name}: {exc.details()}")
                self.failure_times.append(time.monotonic())
                continue
            self.answers.append((time.monotonic(), list(resp.degraded_reasons),
                                 resp.model_version))

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(w)) for w in range(self.workers)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    @property
    def total(self) -> int:
        return len(self.answers) + len(self.failures)

    async def more(self, n: int, limit_s: float = 30) -> None:
        target = self.total + n
        t0 = time.monotonic()
        while self.total < target:
            assert time.monotonic() - t0 < limit_s, f"load stalled waiting for {n} answers"
            await asyncio.sleep(0.01)
