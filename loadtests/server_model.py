"""Sync or aio gRPC server? Measured, same harness, same run.

    .venv/bin/python loadtests/server_model.py [--duration 4] [--out docs/benchmarks]

Serves the Admin service shape (Echo + GetStatus) from a child process in two models:

  aio   grpc.aio server, one event loop; the store call is redis.asyncio (what nba runs)
  sync  grpc.server with a ThreadPoolExecutor (16 threads); the store call is blocking redis-py

and two handlers: `echo` (transport only) and `work` (one Redis GET of a packed vector on the
same unix socket, then ~300 us of Python/numpy CPU work, roughly the shape of a decision), each
at one request in flight and at saturation, with the bench's multi-process grpc.aio load
generator. Prints and writes server_model.json / server_model.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WORK_US = 300


def _burn(us: int) -> float:
    import numpy as np

    end = time.perf_counter_ns() + us * 1000
    acc = 0.0
    x = np.arange(64, dtype=np.float32)
    while time.perf_counter_ns() < end:
        acc += float(np.dot(x, x))
    return acc


def serve(model: str, port: int, redis_url: str, handler: str) -> None:
    """Child process: one server of the given model until SIGTERM."""
    import signal

    import grpc

    from nba_service._proto.nba.v1 import decisioning_pb2 as pb
    from nba_service._proto.nba.v1 import decisioning_pb2_grpc as rpc

    key = b"nba:{c:C0000001}:f"
    status = pb.StatusResponse(ready=True, details={"worker_pid": str(os.getpid())})
    opts = [("grpc.so_reuseport", 1)]
    if model == "aio":
        import asyncio

        import redis.asyncio as aioredis

        class AioAdmin(rpc.AdminServicer):
            def __init__(self) -> None:
                self.r = aioredis.Redis.from_url(redis_url)

            async def Echo(self, request: Any, context: Any) -> Any:
                if handler == "work":
                    await self.r.get(key)
                    _burn(WORK_US)
                return pb.EchoResponse(payload=request.payload)

            async def GetStatus(self, request: Any, context: Any) -> Any:
                return status

        async def main() -> None:
            server = grpc.aio.server(options=opts)
            rpc.add_AdminServicer_to_server(AioAdmin(), server)
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            await stop.wait()
            await server.stop(0)

        asyncio.run(main())
        return
    from concurrent.futures import ThreadPoolExecutor

    import redis

    pool = redis.ConnectionPool.from_url(redis_url, max_connections=32)

    class SyncAdmin(rpc.AdminServicer):
        def Echo(self, request: Any, context: Any) -> Any:
            if handler == "work":
                redis.Redis(connection_pool=pool).get(key)
                _burn(WORK_US)
            return pb.EchoResponse(payload=request.payload)

        def GetStatus(self, request: Any, context: Any) -> Any:
            return status

    server = grpc.server(ThreadPoolExecutor(max_workers=16), options=opts)
    rpc.add_AdminServicer_to_server(SyncAdmin(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()

    def on_term(*_: Any) -> None:
        server.stop(0)

    signal.signal(signal.SIGTERM, on_term)
    server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, default=32, help="the saturation point")
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    p.add_argument("--serve", nargs=4, metavar=("MODEL", "PORT", "REDIS_URL", "HANDLER"),
                   help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.serve:
        serve(a.serve[0], int(a.serve[1]), a.serve[2], a.serve[3])
        return 0

    import redis as sync_redis

    from loadtests.bench import Runner
    from loadtests.loadgen import LoadGenerator
    from loadtests.server_proc import worker_pids
    from loadtests.sysinfo import machine
    from nba_service.store.embedded import EmbeddedRedis, free_port

    rows: list[dict[str, Any]] = []
    with EmbeddedRedis() as store:
        sync_redis.Redis.from_url(store.url).set(b"nba:{c:C0000001}:f", b"x" * 160)
        for handler in ("echo", "work"):
            for model in ("aio", "sync"):
                port = free_port()
                proc = subprocess.Popen(
                    [sys.executable, __file__, "--serve", model, str(port), store.url, handler])
                try:
                    import asyncio

                    deadline = time.monotonic() + 60
                    while not asyncio.run(worker_pids(f"127.0.0.1:{port}")):
                        if time.monotonic() > deadline or proc.poll() is not None:
                            raise RuntimeError(f"{model} server did not start")
                        time.sleep(0.1)
                    gen = LoadGenerator(a.clients, f"127.0.0.1:{port}", store.url, ["C0000001"], 1)
                    try:
                        runner = Runner(gen, a, {"server": [proc.pid]}, print)
                        for c in (1, a.concurrency):
                            s = runner.run(f"{handler}_{model}_c{c}", "closed", rpc="echo",
                                           concurrency=c)
                            cpu = s["cpu_cores"].get("server", 0.0)
                            rows.append({"handler": handler, "model": model, "concurrency": c,
                                         "throughput": s["throughput"], "latency_us":
                                         s["latency_us"], "server_cores": cpu,
                                         "server_cpu_us_per_request":
                                         1e6 * cpu / s["throughput"] if s["throughput"] else None,
                                         "errors": s["error_count"], "cpu": s["cpu_cores"]})
                    finally:
                        gen.close()
                finally:
                    proc.terminate()
                    proc.wait(20)
    a.out.mkdir(parents=True, exist_ok=True)
    doc = {"command": "python loadtests/server_model.py " + " ".join(argv or sys.argv[1:]),
           "machine": machine(), "work_us": WORK_US, "rows": rows}
    (a.out / "server_model.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = ["| handler | model | in flight | throughput/s | p50 us | p99 us | server CPU us/request "
          "| other tenants (cores) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lat = r["latency_us"]
        md.append(f"| {r['handler']} | {r['model']} | {r['concurrency']} | {r['throughput']:,.0f} "
                  f"| {lat['p50']:,.0f} | {lat['p99']:,.0f} | "
                  f"{r['server_cpu_us_per_request'] or float('nan'):,.0f} "
                  f"| {r['cpu'].get('other', 0):.2f} |")
    (a.out / "server_model.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
