"""Load shedding at 3x overload: goodput and the latency of accepted requests.

Runs `nba serve` as a real process (embedded store, demo model and customers), then:

1. capacity: closed loop at a concurrency that saturates the server -> requests/s and latency;
2. at 3x that rate, open loop, twice, in the same run: the server with shedding
   (NBA_MAX_IN_FLIGHT) and the baseline without (a limit no load reaches).

Reports goodput (successful answers/s) as a share of capacity, p50/p95/p99 of the accepted
requests and the count of RESOURCE_EXHAUSTED. Loopback only, bounded in time.

With `--pin` the server (one worker) gets CPU 0 to itself and the load generators and the store
share CPU 1, so what is measured is the server's own queueing, not the generators competing
with it for the same cores.

`--h2load` drives the load with nghttp2's h2load (C; `apt-get install nghttp2-client`), whose
calls cost the generator about a tenth of a Python gRPC client's, so the offered rate is really
offered. h2load cannot tell gRPC statuses apart (all are HTTP 200), so: goodput comes from the
server's own `nba_rpc_duration_seconds_count{code="OK"}`, and a Python probe sending 50 calls/s
through the same queue measures the status codes and the latency of accepted calls. Implies
`--pin`; compares the server with `NBA_MAX_PENDING` (gRPC's core refuses the backlog) against
the in-flight limit alone.

    .venv/bin/python -m loadtests.bench_overload --seconds 8 [--pin | --h2load]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import redis

from loadtests.stats import summarize
from nba_service._proto.nba.v1 import decisioning_pb2_grpc as rpc
from nba_service.client import build_request
from nba_service.store.embedded import EmbeddedRedis, free_port

NBA = Path(sys.executable).with_name("nba")


def prepare(work: Path, store: EmbeddedRedis) -> tuple[Path, list[str]]:
    """The demo model and 200 simulated customers, loaded into `store`."""
    from features.schema import FeatureSchema
    from nba_service.demo import write_customers
    from nba_service.engine.catalog import load_catalog
    from training.simulate import Simulator
    from training.train import train_demo_model

    examples = Path(__file__).resolve().parents[1] / "examples"
    schema = FeatureSchema.from_yaml(examples / "features.yaml")
    catalog = load_catalog(examples / "catalog.yaml", schema)
    model = Path(train_demo_model(schema, catalog, work / "model", n_customers=400, seed=3))
    customers = Simulator(schema, catalog, seed=11).customers(200)
    write_customers(work / "c.parquet", customers, schema)
    from nba_service.store.loader import load_file

    load_file(work / "c.parquet", redis.Redis.from_url(store.url), schema, progress=False)
    return model, [str(c["customer_id"]) for c in customers]


SERVER_CPU, CLIENT_CPU = 0, 1


def _pin_clients() -> None:
    os.sched_setaffinity(0, {CLIENT_CPU})


def serve(port: int, store: EmbeddedRedis, model: Path, max_in_flight: int,
          max_loop_lag_s: float = 0.0, pin: bool = False, max_pending: int = 0,
          http_port: int = -1) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NBA_MAX_IN_FLIGHT": str(max_in_flight),
           "NBA_HTTP_PORT": str(http_port), "NBA_HTTP_HOST": "127.0.0.1",
           "NBA_MAX_PENDING": str(max_pending),
           "NBA_MAX_LOOP_LAG_S": str(max_loop_lag_s),
           "NBA_DECISION_LOG": "false", "NBA_LOG_LEVEL": "WARNING",
           "NBA_CATALOG_WATCH_INTERVAL_S": "0"}
    cmd = [str(NBA), "serve", "--port", str(port), "--redis-url", store.url, "--model",
           str(model), "--workers", "1"]
    if pin:  # set before exec, so every thread the server starts inherits it
        cmd = ["taskset", "-c", str(SERVER_CPU), *cmd]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_ready(target: str, limit_s: float = 120) -> None:
    t0 = time.monotonic()
    async with grpc.aio.insecure_channel(target) as ch:
        stub = rpc.DecisioningStub(ch)
        while True:
            try:
                await stub.Decide(build_request("warm", "WEB"), timeout=2)
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() - t0 > limit_s:
                    raise
                await asyncio.sleep(0.1)


async def closed_loop(target: str, customers: list[str], concurrency: int, seconds: float
                      ) -> tuple[float, np.ndarray]:
    lat: list[int] = []
    stop = time.monotonic() + seconds

    async def worker(w: int) -> None:
        async with grpc.aio.insecure_channel(target) as ch:
            stub = rpc.DecisioningStub(ch)
            i = w
            while time.monotonic() < stop:
                t = time.perf_counter_ns()
                await stub.Decide(build_request(customers[i % len(customers)], "WEB"), timeout=5)
                lat.append(time.perf_counter_ns() - t)
                i += concurrency

    t0 = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return len(lat) / (time.monotonic() - t0), np.asarray(lat)


async def _open_loop_proc(target: str, customers: list[str], rate: float, seconds: float
                         ) -> tuple[list[int], dict[str, int], int, float]:
    ok: list[int] = []
    codes: dict[str, int] = {}
    sent = 0
    pending: set[asyncio.Task[None]] = set()
    async with grpc.aio.insecure_channel(target) as ch:
        stub = rpc.DecisioningStub(ch)
        requests = [build_request(c, "WEB") for c in customers]

        async def one(i: int) -> None:
            t = time.perf_counter_ns()
            try:
                await stub.Decide(requests[i % len(requests)], timeout=2)
                ok.append(time.perf_counter_ns() - t)
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] = codes.get(exc.code().name, 0) + 1

        t0 = time.monotonic()
        while (now := time.monotonic()) - t0 < seconds:
            while sent < int((now - t0) * rate):
                task = asyncio.create_task(one(sent))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            await asyncio.sleep(0.001)
        elapsed = time.monotonic() - t0
        await asyncio.gather(*pending)
    return ok, codes, sent, elapsed


def _open_loop_main(args: tuple[str, list[str], float, float]) -> tuple[list[int], dict[str, int],
                                                                         int, float]:
    return asyncio.run(_open_loop_proc(*args))


async def open_loop(target: str, customers: list[str], rate: float, seconds: float,
                    procs: int = 2, pin: bool = False) -> dict[str, object]:
    """Fixed-rate arrivals from `procs` generator processes, each call on its own: overload is
    not slowed down by the server's answers (a closed loop would back off by itself)."""
    from concurrent.futures import ProcessPoolExecutor

    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(procs, initializer=_pin_clients if pin else None) as pool:
        parts = await asyncio.gather(*(
            loop.run_in_executor(pool, _open_loop_main,
                                 (target, customers, rate / procs, seconds))
            for _ in range(procs)))
    ok = [x for p in parts for x in p[0]]
    codes: dict[str, int] = {}
    for p in parts:
        for k, v in p[1].items():
            codes[k] = codes.get(k, 0) + v
    elapsed = max(p[3] for p in parts)
    return {"offered_rps": sum(p[2] for p in parts) / elapsed, "goodput_rps": len(ok) / elapsed,
            "latency": summarize(np.asarray(ok)) if ok else {}, "errors": codes}


def _ok_count(http_port: int) -> float:
    """Successful Decide calls so far, from the server's Prometheus metrics."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("nba_rpc_duration_seconds_count") and "Decide" in line
               and 'code="OK"' in line)


async def _probe(target: str, customers: list[str], rate: float, seconds: float
                 ) -> tuple[np.ndarray, dict[str, int]]:
    """`rate` calls/s through the server's queue: their codes, and latency when answered."""
    lat: list[int] = []
    codes: dict[str, int] = {}
    async with grpc.aio.insecure_channel(target) as ch:
        stub = rpc.DecisioningStub(ch)

        async def one(i: int) -> None:
            t = time.perf_counter_ns()
            try:
                await stub.Decide(build_request(customers[i % len(customers)], "WEB"), timeout=2)
                lat.append(time.perf_counter_ns() - t)
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] = codes.get(exc.code().name, 0) + 1

        tasks = []
        t0 = time.monotonic()
        for i in range(int(rate * seconds)):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
        await asyncio.gather(*tasks)
    return np.asarray(lat), codes


async def _h2load_phase(target: str, http_port: int, body: Path, customers: list[str],
                        seconds: float, rate: float | None) -> dict[str, object]:
    """h2load at `rate` calls/s (None: closed loop, 16 in flight) plus the probe."""
    load = ["-c", "4", "-m", "4"] if rate is None else ["-c", "4", "-m", "250", "--rps",
                                                         f"{rate / 4:.0f}"]
    cmd = ["taskset", "-c", str(CLIENT_CPU), "h2load", *load, "-D", f"{seconds:g}",
           "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
           f"http://{target}/nba.v1.Decisioning/Decide"]
    ok0, t0 = _ok_count(http_port), time.monotonic()
    h2 = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                              stderr=asyncio.subprocess.STDOUT)
    lat, codes = await _probe(target, customers, 50, seconds)
    out = (await h2.communicate())[0].decode()
    elapsed = time.monotonic() - t0
    ok = _ok_count(http_port) - ok0 - len(lat)
    sent = [float(x) for x in re.findall(r"requests: (\d+) total", out)] or [float("nan")]
    return {"offered_rps": sent[0] / seconds, "goodput_rps": ok / elapsed,
            "latency": summarize(lat) if len(lat) else {}, "errors": codes}


async def run_h2load(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="nba-overload-") as d, EmbeddedRedis() as store:
        model, customers = prepare(Path(d), store)
        _pin_clients()
        os.sched_setaffinity(store.pid, {CLIENT_CPU})
        msg = build_request(customers[0], "WEB").SerializeToString()
        body = Path(d) / "decide.grpc"
        body.write_bytes(b"\0" + struct.pack(">I", len(msg)) + msg)  # one gRPC frame
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"python {platform.python_version()}")
        print(f"command: {' '.join(sys.argv)}")
        print(f"pinned: server on CPU {SERVER_CPU}; h2load, probe and store on CPU {CLIENT_CPU}")
        for label, limit, pending in (("max_pending", args.max_in_flight, args.max_pending),
                                      ("in-flight only", args.max_in_flight, 0)):
            port, http = free_port(), free_port()
            proc = serve(port, store, model, limit, 0.0, True, pending, http)
            target = f"127.0.0.1:{port}"
            try:
                await wait_ready(target)
                cap = await _h2load_phase(target, http, body, customers, args.seconds, None)
                capacity = float(cap["goodput_rps"])  # type: ignore[arg-type]
                res = await _h2load_phase(target, http, body, customers, args.seconds,
                                          3 * capacity)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
            good = float(res["goodput_rps"])  # type: ignore[arg-type]
            print(f"\n[{label}] max_in_flight={limit} max_pending={pending}")
            print(f"  capacity (h2load closed loop, 16 in flight): {capacity:,.0f} req/s; "
                  f"probe {fmt(cap['latency'])}")  # type: ignore[arg-type]
            print(f"  3x offered: {res['offered_rps']:,.0f} req/s -> goodput {good:,.0f} req/s "
                  f"= {100 * good / capacity:.0f}% of capacity")
            print(f"  probe at 3x, answered: {fmt(res['latency'])}")  # type: ignore[arg-type]
            print(f"  probe at 3x, refused / failed: {res['errors'] or 'none'}")


def fmt(s: dict[str, float]) -> str:
    return " ".join(f"{k}={v:,.0f}us" for k, v in s.items() if k in ("p50", "p95", "p99"))


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="nba-overload-") as d, EmbeddedRedis() as store:
        model, customers = prepare(Path(d), store)
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"python {platform.python_version()}")
        print(f"command: {' '.join(sys.argv)}")
        if args.pin:
            _pin_clients()  # this process runs the closed loop
            os.sched_setaffinity(store.pid, {CLIENT_CPU})
            print(f"pinned: server on CPU {SERVER_CPU}; generators and store on CPU "
                  f"{CLIENT_CPU}")
        rows = []
        configs = [("shedding", args.max_in_flight, 0.0), ("baseline", 1_000_000, 0.0)]
        if args.max_loop_lag_ms > 0:
            configs.insert(1, ("shedding+lag", args.max_in_flight, args.max_loop_lag_ms / 1000))
        for label, limit, lag_s in configs:
            port = free_port()
            proc = serve(port, store, model, limit, lag_s, args.pin)
            target = f"127.0.0.1:{port}"
            try:
                await wait_ready(target)
                cap, lat = await closed_loop(target, customers, args.concurrency, args.seconds)
                res = await open_loop(target, customers, 3 * cap, args.seconds, args.procs,
                                      args.pin)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
            rows.append((label, limit, lag_s, cap, summarize(lat), res))
        for label, limit, lag_s, cap, lat, res in rows:
            good = float(res["goodput_rps"])  # type: ignore[arg-type]
            print(f"\n[{label}] max_in_flight={limit} max_loop_lag={lag_s * 1000:g}ms")
            print(f"  capacity (closed loop, {args.concurrency} in flight): {cap:,.0f} req/s, "
                  f"{fmt(lat)}")
            print(f"  3x offered: {res['offered_rps']:,.0f} req/s -> goodput {good:,.0f} req/s "
                  f"= {100 * good / cap:.0f}% of capacity")
            print(f"  accepted latency at 3x: {fmt(res['latency'])}")  # type: ignore[arg-type]
            print(f"  refused / failed: {res['errors'] or 'none'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0, help="duration of each phase")
    p.add_argument("--concurrency", type=int, default=16, help="closed-loop calls in flight")
    p.add_argument("--max-in-flight", type=int, default=16, help="the shedding server's limit")
    p.add_argument("--pin", action="store_true",
                   help=f"server alone on CPU {SERVER_CPU}, generators and store on CPU "
                        f"{CLIENT_CPU}")
    p.add_argument("--procs", type=int, default=2, help="open-loop generator processes")
    p.add_argument("--h2load", action="store_true",
                   help="load from h2load (nghttp2-client), pinned; see the module docstring")
    p.add_argument("--max-pending", type=int, default=16,
                   help="NBA_MAX_PENDING of the --h2load run's first server")
    p.add_argument("--max-loop-lag-ms", type=float, default=0.0,
                   help="also run the shedding server with event-loop lag shedding at this lag")
    args = p.parse_args()
    asyncio.run(run_h2load(args) if args.h2load else run(args))


if __name__ == "__main__":
    main()
