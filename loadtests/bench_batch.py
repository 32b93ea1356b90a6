"""Benchmark: `nba batch decide` over a customer list vs the service's per-core decision rate.

    .venv/bin/python loadtests/bench_batch.py [--customers 1000000] [--service-requests 20000]

In one run, against one embedded valkey-server holding N customers (20,000 distinct simulated
profiles repeated under N ids) and one freshly trained demo model:

1. **Baseline, the service:** `nba serve` (one worker process) answers unary Decide calls for
   EMAIL from a gRPC client in this process (`--concurrency` calls in flight). Reported: the
   latency percentiles, the throughput, and the *per-core rate* = decisions / CPU seconds the
   server process used (from /proc), i.e. what one core of the service delivers.
2. **Batch:** `run_batch` (the code behind `nba batch decide`) in this process over the N-id
   list, decision log on (stream capped with MAXLEN ~ so memory stays bounded). Reported: wall
   rate, decisions per CPU second of the batch process, and p50/p95/p99 of the per-chunk rate.

Both paths log every decision; the store runs on the other core in both. Prints the machine and
the command; the results go into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.encoding import encode_batch_values  # noqa: E402
from features.packing import pack  # noqa: E402
from features.schema import FeatureSchema  # noqa: E402
from nba_service._proto.nba.v1 import decisioning_pb2_grpc  # noqa: E402
from nba_service.batch import read_customer_ids, run_batch  # noqa: E402
from nba_service.client import build_request  # noqa: E402
from nba_service.engine.catalog import load_catalog  # noqa: E402
from nba_service.runtime import Runtime  # noqa: E402
from nba_service.settings import Settings  # noqa: E402
from nba_service.store.embedded import EmbeddedRedis, free_port  # noqa: E402
from nba_service.store.keys import features_key  # noqa: E402
from training.simulate import Simulator  # noqa: E402
from training.train import train_demo_model  # noqa: E402

EXAMPLES = ROOT / "examples"
DISTINCT = 20_000
CHANNEL = "EMAIL"


def pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) if len(a) else float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def seed(url: str, schema: FeatureSchema, n: int) -> list[str]:
    sim = Simulator(schema, load_catalog(EXAMPLES / "catalog.yaml", schema), seed=5)
    blobs = [pack(schema, encode_batch_values(schema, c), time.time_ns() // 1_000_000)
             for c in sim.customers(min(n, DISTINCT))]
    client = redis.Redis.from_url(url)
    ids = [f"B{i:08d}" for i in range(n)]
    for start in range(0, n, 10_000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + 10_000)):
            pipe.set(features_key(ids[i]), blobs[i % len(blobs)])
        pipe.execute()
    return ids


async def service_baseline(url: str, model: Path, ids: list[str], requests: int,
                           concurrency: int) -> dict[str, float]:
    port = free_port()
    env = {**os.environ, "NBA_REDIS_URL": url, "NBA_PORT": str(port), "NBA_LOG_LEVEL": "WARNING",
           "NBA_DECISION_LOG_MAXLEN": "200000", "NBA_REDIS_TIMEOUT_S": "5"}
    proc = subprocess.Popen([sys.executable, "-m", "nba_service.cli", "serve", "--model",
                             str(model)], env=env)
    try:
        target = f"127.0.0.1:{port}"
        async with grpc.aio.insecure_channel(target) as ch:
            stub = decisioning_pb2_grpc.DecisioningStub(ch)
            deadline = time.monotonic() + 120
            while True:  # ready once it answers a decision
                try:
                    await stub.Decide(build_request(ids[0], CHANNEL), timeout=2)
                    break
                except grpc.aio.AioRpcError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    await asyncio.sleep(0.2)
            for i in range(500):  # warm-up
                await stub.Decide(build_request(ids[i % len(ids)], CHANNEL), timeout=5)
            lat = np.empty(requests, dtype=np.float64)
            counter = iter(range(requests))

            async def worker() -> None:
                for i in counter:
                    t0 = time.perf_counter_ns()
                    await stub.Decide(build_request(ids[(i * 7919) % len(ids)], CHANNEL),
                                      timeout=10)
                    lat[i] = (time.perf_counter_ns() - t0) / 1e3

            cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            wall, cpu = time.perf_counter() - t0, cpu_seconds(proc.pid) - cpu0
    finally:
        proc.terminate()
        proc.wait(30)
    return {"requests": requests, "wall_s": wall, "rate": requests / wall,
            "cpu_s": cpu, "per_core_rate": requests / cpu, "p50_us": pct(lat, 50),
            "p95_us": pct(lat, 95), "p99_us": pct(lat, 99)}


async def batch_run(url: str, model: Path, ids_file: Path, n: int, chunk: int,
                    out: Path) -> dict[str, float]:
    settings = Settings(redis_url=url, model_path=model, decision_log_maxlen=200_000,
                        log_level="WARNING", redis_timeout_s=5.0)
    runtime = Runtime(settings)
    await runtime.start()
    try:
        cpu0 = time.process_time()
        rep = await run_batch(runtime, read_customer_ids(ids_file, "customer_id", chunk), out,
                              CHANNEL, limit=1, progress=sys.stderr.isatty(), total=n)
        cpu = time.process_time() - cpu0
        written = runtime.decision_log.counters.written if runtime.decision_log else 0
        dropped = runtime.decision_log.counters.dropped_queue_full if runtime.decision_log else 0
    finally:
        await runtime.stop()
    rates = np.asarray(rep.chunk_rates)
    return {"customers": rep.customers, "wall_s": rep.seconds, "rate": rep.rate,
            "cpu_s": cpu, "per_core_rate": rep.customers / cpu, "chunk_p50": pct(rates, 50),
            "chunk_p5": pct(rates, 5), "chunk_p1": pct(rates, 1), "logged": written,
            "log_dropped": dropped, "degraded": rep.degraded}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--service-requests", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=5000)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    print(f"machine: {platform.machine()} {platform.processor() or ''} "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")
    print("command:", shlex.join([sys.executable, *sys.argv]))
    schema = FeatureSchema.from_yaml(EXAMPLES / "features.yaml")
    catalog = load_catalog(EXAMPLES / "catalog.yaml", schema)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis() as store:
        work = Path(tmp)
        t0 = time.perf_counter()
        ids = seed(store.url, schema, args.customers)
        print(f"seeded {len(ids):,} customers in {time.perf_counter() - t0:.1f} s")
        model = Path(train_demo_model(schema, catalog, work / "model", n_customers=2000))
        ids_file = work / "campaign.parquet"
        pq.write_table(pa.table({"customer_id": ids}), ids_file)

        s = asyncio.run(service_baseline(store.url, model, ids, args.service_requests,
                                         args.concurrency))
        print(f"service (1 worker, {args.concurrency} in flight): {s['requests']:,} Decide in "
              f"{s['wall_s']:.1f} s = {s['rate']:,.0f}/s; server CPU {s['cpu_s']:.1f} s -> "
              f"per-core rate {s['per_core_rate']:,.0f} decisions/CPU-s; latency p50 "
              f"{s['p50_us']:.0f} us p95 {s['p95_us']:.0f} us p99 {s['p99_us']:.0f} us")
        b = asyncio.run(batch_run(store.url, model, ids_file, len(ids), args.chunk,
                                  work / "results.parquet"))
        print(f"batch: {b['customers']:,} customers in {b['wall_s']:.1f} s = {b['rate']:,.0f}/s "
              f"wall; process CPU {b['cpu_s']:.1f} s -> {b['per_core_rate']:,.0f} "
              f"decisions/CPU-s; per-chunk rate p50 {b['chunk_p50']:,.0f}/s, p95 (slowest 5%) "
              f"{b['chunk_p5']:,.0f}/s, p99 {b['chunk_p1']:,.0f}/s; logged {b['logged']:,}, "
              f"dropped {b['log_dropped']}, degraded answers {b['degraded']}")
        ratio = b["per_core_rate"] / s["per_core_rate"]
        print(f"batch per-core rate / service per-core rate = {ratio:.2f}x "
              f"(wall: batch {b['rate']:,.0f}/s vs service {s['rate']:,.0f}/s)")
        print(f"time for 1,000,000 at the batch wall rate: {1e6 / b['rate']:.0f} s")
    return 0 if ratio >= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
