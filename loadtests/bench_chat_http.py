"""Latency of the chat trigger and of the HTTP/JSON gateway, against gRPC Decide as baseline.

One closed-loop client on loopback against a real server (embedded valkey, demo model, demo
catalog with an always-open chat section), all measured in the same run:

- gRPC Decide (WEB, a known customer)                  the baseline
- HTTP POST /v1/decide, the same request               gateway overhead = difference
- gRPC EvaluateChatTrigger, anonymous / known customer the full scoring path (no free agent, so
                                                       no hold is taken and every call scores)
- HTTP POST /v1/chat-trigger, anonymous

    .venv/bin/python loadtests/bench_chat_http.py [--iterations 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import redis
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.schema import FeatureSchema  # noqa: E402
from nba_service._proto.nba.v1 import decisioning_pb2 as pb  # noqa: E402
from nba_service._proto.nba.v1 import decisioning_pb2_grpc  # noqa: E402
from nba_service.demo import write_customers  # noqa: E402
from nba_service.engine.catalog import load_catalog  # noqa: E402
from nba_service.runtime import Runtime  # noqa: E402
from nba_service.server import NbaServer  # noqa: E402
from nba_service.settings import Settings  # noqa: E402
from nba_service.store.embedded import EmbeddedRedis  # noqa: E402
from nba_service.store.loader import load_file  # noqa: E402
from tests.chat_fixtures import write_chat_catalog  # noqa: E402
from training.simulate import Simulator  # noqa: E402
from training.train import train_demo_model  # noqa: E402


async def measure(cases: list[tuple[str, Callable[[int], Awaitable[object]]]],
                  n: int) -> list[tuple[str, np.ndarray]]:
    """Round-robin over the cases, so drifting load on a shared machine hits all alike."""
    for i in range(min(200, n)):  # warm-up: connections, caches
        for _, call in cases:
            await call(i)
    out = np.empty((len(cases), n), dtype=np.int64)
    for i in tqdm(range(n), desc="requests", leave=False):
        for j, (_, call) in enumerate(cases):
            t0 = time.perf_counter_ns()
            await call(i)
            out[j, i] = time.perf_counter_ns() - t0
    return [(name, out[j]) for j, (name, _) in enumerate(cases)]


def line(name: str, ns: np.ndarray) -> str:
    p50, p95, p99 = (np.percentile(ns, q) / 1000 for q in (50, 95, 99))
    return f"{name:<34} p50 {p50:8.0f} us   p95 {p95:8.0f} us   p99 {p99:8.0f} us"


async def run(n: int, work: Path) -> None:
    schema = FeatureSchema.from_yaml(ROOT / "examples" / "features.yaml")
    catalog = load_catalog(ROOT / "examples" / "catalog.yaml", schema)
    model = train_demo_model(schema, catalog, work / "model", n_customers=400, seed=3)
    customers = Simulator(schema, catalog, seed=11).customers(200)
    ids = [str(c["customer_id"]) for c in customers]
    with EmbeddedRedis() as store:
        write_customers(work / "c.parquet", customers, schema)
        load_file(work / "c.parquet", redis.Redis.from_url(store.url), schema, progress=False)
        settings = Settings(host="127.0.0.1", port=0, redis_url=store.url, model_path=model,
                            catalog=write_chat_catalog(work), decision_log=False)
        server = NbaServer(settings, Runtime(settings))
        await server.start()
        try:
            assert server.address is not None and server.http is not None
            async with grpc.aio.insecure_channel(server.address.target) as ch, \
                    aiohttp.ClientSession(base_url=server.http.url) as http:
                stub = decisioning_pb2_grpc.DecisioningStub(ch)
                for q in ("sales", "service"):
                    await stub.ReportAgentCapacity(pb.AgentCapacityRequest(queue=q))
                ctx = {"page_type": pb.Value(string_value="product")}

                async def g_decide(i: int) -> object:
                    return await stub.Decide(pb.DecideRequest(
                        customer_id=ids[i % len(ids)], channel=pb.WEB, context=ctx))

                async def h_decide(i: int) -> object:
                    body = {"customerId": ids[i % len(ids)], "channel": "WEB",
                            "context": {"page_type": {"stringValue": "product"}}}
                    async with http.post("/v1/decide", json=body) as r:
                        assert r.status == 200
                        return await r.json()

                def trig(i: int, known: bool) -> pb.ChatTriggerRequest:
                    return pb.ChatTriggerRequest(
                        session_id=f"s{i}", customer_id=ids[i % len(ids)] if known else "",
                        page_type="product", dwell_time_s=30, pages_in_session=3)

                async def g_chat(i: int) -> object:
                    r = await stub.EvaluateChatTrigger(trig(i, False))
                    assert r.reason_codes[0] == "NO_FREE_AGENT", r.reason_codes
                    return r

                async def g_chat_known(i: int) -> object:
                    return await stub.EvaluateChatTrigger(trig(i, True))

                async def h_chat(i: int) -> object:
                    body = {"sessionId": f"s{i}", "pageType": "product", "dwellTimeS": 30,
                            "pagesInSession": 3}
                    async with http.post("/v1/chat-trigger", json=body) as r:
                        assert r.status == 200
                        return await r.json()

                results = await measure([
                    ("gRPC Decide (baseline)", g_decide),
                    ("HTTP /v1/decide", h_decide),
                    ("gRPC EvaluateChatTrigger anon", g_chat),
                    ("gRPC EvaluateChatTrigger known", g_chat_known),
                    ("HTTP /v1/chat-trigger anon", h_chat),
                ], n)
        finally:
            await server.stop(grace=0.5)
    print(f"command:  .venv/bin/python loadtests/bench_chat_http.py --iterations {n}")
    print(f"machine:  {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"{platform.system()} {platform.release()}")
    print(f"software: Python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
          f"grpcio {grpc.__version__}")
    print("one closed-loop client over loopback, cases interleaved, round-trip latency:")
    for name, ns in results:
        print(line(name, ns))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=2000, help="requests per measurement")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="nba-bench-chat-") as tmp:
        asyncio.run(run(args.iterations, Path(tmp)))


if __name__ == "__main__":
    main()
