"""`nba demo`: from nothing to ranked recommendations over a real gRPC call.

Synthetic customers -> first LightGBM model -> embedded store loaded through the real loader ->
the real server -> a real gRPC client. Every step is the production code path.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from features.schema import FeatureSchema, Source
from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.client import build_request, format_decision
from nba_service.engine.catalog import load_catalog
from nba_service.runtime import Runtime
from nba_service.server import NbaServer
from nba_service.settings import load_settings
from nba_service.store.embedded import EmbeddedRedis
from nba_service.store.loader import load_file
from training.simulate import Simulator
from training.train import train_demo_model

SAMPLES: list[tuple[int | None, str, str, dict[str, object]]] = [
    # (customer index or None for unknown, channel, placement, context)
    (0, "WEB", "hero", {"page_type": "product", "hour_of_day": 14}),
    (1, "CALL_CENTRE", "agent_script", {"hour_of_day": 10}),
    (2, "MOBILE_APP", "home", {"page_type": "account", "hour_of_day": 21}),
    (None, "WEB", "hero", {"page_type": "home", "hour_of_day": 9}),
]


@contextmanager
def _step(title: str) -> Iterator[None]:
    print(f"- {title} ...", end="", flush=True)
    t0 = time.perf_counter()
    yield
    print(f" done ({time.perf_counter() - t0:.1f}s)", flush=True)


def write_customers(path: Path, customers: list[dict[str, object]], schema: FeatureSchema) -> None:
    """The demo customer base as a Parquet file: exactly what `nba features load` takes."""
    cols = ["customer_id"] + [f.name for f in schema.of(Source.BATCH)]
    table = pa.table({c: [row.get(c) for row in customers] for c in cols})
    pq.write_table(table, path)


async def run_demo(args: argparse.Namespace) -> int:
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="nba-demo-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    settings = load_settings(port=args.port, host="127.0.0.1")
    schema = FeatureSchema.from_yaml(settings.feature_schema)
    catalog = load_catalog(settings.catalog, schema)
    print(
        f"nba demo: {len(catalog.actions)} actions, {len(schema.features)} features, "
        f"work dir {workdir}"
    )
    store = EmbeddedRedis()
    try:
        with _step(f"simulating {args.customers} customers"):
            sim = Simulator(schema, catalog, seed=args.seed)
            customers = sim.customers(args.customers)
            data = workdir / "customers.parquet"
            write_customers(data, customers, schema)
        with _step("training a first LightGBM propensity model"):
            artifact = train_demo_model(
                schema, catalog, workdir / "model", n_customers=args.customers, seed=args.seed
            )
        with _step("starting the embedded store and loading features"):
            store.start()
            report = load_file(data, redis.Redis.from_url(store.url), schema, progress=False)
        print(f"  loaded {report.loaded} customers, rejected {report.rejected}")
        settings = settings.model_copy(update={"redis_url": store.url, "model_path": artifact})
        server = NbaServer(settings, Runtime(settings))
        with _step("starting the gRPC server (compiling rule kernels)"):
            address = await server.start()
        try:
            if not server.runtime.ready():
                print(f"server not ready: {server.runtime.details()}")
                return 1
            print(f"  serving on {address.target}\n")
            async with grpc.aio.insecure_channel(address.target) as channel:
                stub = decisioning_pb2_grpc.DecisioningStub(channel)
                for idx, ch, placement, ctx in SAMPLES:
                    cid = str(customers[idx]["customer_id"]) if idx is not None else "new-visitor-1"
                    resp = await stub.Decide(
                        build_request(cid, ch, placement, ctx, limit=3), timeout=5.0
                    )
                    print(format_decision(cid, ch, resp))
                    print()
            if args.keep_serving:
                print(
                    f"serving on {address.target}; try: nba decide "
                    f"{customers[0]['customer_id']} --channel WEB --target {address.target}"
                    "\nCtrl-C to stop"
                )
                if server.http is not None:
                    # Two agents per queue, so the demo page can show its chat invite.
                    async with grpc.aio.insecure_channel(address.target) as channel:
                        stub = decisioning_pb2_grpc.DecisioningStub(channel)
                        for queue in ("sales", "service"):
                            await stub.ReportAgentCapacity(pb.AgentCapacityRequest(
                                queue=queue, agents_available=2), timeout=5.0)
                    print(
                        f"demo page: {server.http.url}/demo?customer="
                        f"{customers[0]['customer_id']}  (chat invite after the dwell time;"
                        " capacity reports expire after 5 min: re-report on the page)\n"
                        f"inspector: {server.http.url}/inspector?customer_id="
                        f"{customers[0]['customer_id']}&channel=WEB"
                    )
                await _wait_forever()
        finally:
            await server.stop(grace=1.0)
    finally:
        store.stop()
        if tmp is not None:
            tmp.cleanup()
    return 0


async def _wait_forever() -> None:
    with suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
