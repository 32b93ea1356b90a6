"""Starting and stopping the service under test: `nba serve --workers W` as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from loadtests.sysinfo import children


async def worker_pids(target: str, attempts: int = 1) -> dict[str, bool]:
    """pid -> ready of the workers answering on `target`, one fresh connection per attempt
    (so SO_REUSEPORT gets a chance to route each to a different worker)."""
    import grpc

    from nba_service._proto.nba.v1 import decisioning_pb2 as pb
    from nba_service._proto.nba.v1 import decisioning_pb2_grpc as rpc

    seen: dict[str, bool] = {}
    for _ in range(attempts):
        async with grpc.aio.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as ch:
            try:
                st = await rpc.AdminStub(ch).GetStatus(pb.GetStatusRequest(), timeout=2.0)
            except grpc.aio.AioRpcError:
                continue
            seen[st.details.get("worker_pid", "?")] = st.ready
    return seen


class ServerProcess:
    """`nba serve` in a child process with its log in `log_path`."""

    def __init__(self, *, workers: int, port: int, redis_url: str, model: Path, catalog: Path,
                 log_path: Path, host: str = "127.0.0.1") -> None:
        self.workers = workers
        self.target = f"{host}:{port}"
        self.log_path = log_path
        cmd = [sys.executable, "-m", "nba_service.cli", "serve", "--workers", str(workers),
               "--host", host, "--port", str(port), "--redis-url", redis_url,
               "--model", str(model), "--catalog", str(catalog)]
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        # The gRPC API is what is measured; the HTTP gateway stays off (and off port 8080).
        env = dict(os.environ, NBA_LOG_LEVEL="WARNING", NBA_HTTP_PORT="-1")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL)
        self.pids: list[int] = []

    def wait_ready(self, timeout_s: float = 120.0) -> list[int]:
        """Until `workers` distinct ready workers answer on the port; returns their pids."""
        deadline = time.monotonic() + timeout_s
        seen: dict[str, bool] = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            seen.update(asyncio.run(worker_pids(self.target, attempts=4)))
            ready = [int(p) for p, ok in seen.items() if ok and p.isdigit()]
            if len(ready) >= self.workers:
                self.pids = sorted(ready)
                return self.pids
            # Workers import, load and JIT-warm for a few seconds; poll at a modest pace.
            time.sleep(0.2)
        raise TimeoutError(f"{len(seen)} of {self.workers} workers ready after {timeout_s}s: "
                           f"{self.log_tail()}")

    def all_pids(self) -> list[int]:
        """The server's processes: the supervisor (or the single server) and its workers."""
        kids = [p for p in children(self.proc.pid)]
        return sorted({self.proc.pid, *kids, *self.pids})

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
