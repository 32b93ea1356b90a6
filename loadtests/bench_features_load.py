"""Benchmark of `nba features load`: N customers x F float features into a fresh embedded server.

    .venv/bin/python loadtests/bench_features_load.py --rows 1000000 --features 60

Targets (docs/feature-store.md): 1M x 60 in <= 60 s on a 2-core box, <= 400 bytes per customer
(used_memory delta / customers). Prints the machine, the command and the results; exits 1 when
a target is missed so CI can run it with a smaller --rows as a smoke test.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.packing import unpack  # noqa: E402
from features.schema import FeatureSchema  # noqa: E402
from nba_service.store.embedded import EmbeddedRedis  # noqa: E402
from nba_service.store.keys import features_key  # noqa: E402
from nba_service.store.loader import load_file  # noqa: E402

ID_BASE = 10_000_000  # 8-digit customer ids, like a real bank's


def synthetic_schema(n_features: int) -> FeatureSchema:
    return FeatureSchema.from_dict({
        "name": f"bench-{n_features}",
        "features": [
            {"name": f"f{i:03d}", "dtype": "float", "source": "batch", "default": 0,
             "max_age": "30d"}
            for i in range(n_features)
        ],
    })


def write_parquet(path: Path, schema: FeatureSchema, rows: int, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    chunk = 100_000
    fields = [pa.field("customer_id", pa.string())] + [
        pa.field(name, pa.float32()) for name in schema.column_names
    ]
    with pq.ParquetWriter(path, pa.schema(fields), compression="snappy") as writer:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            ids = pa.array(np.arange(ID_BASE + start, ID_BASE + start + n).astype(str))
            data = rng.normal(100.0, 50.0, size=(n, len(schema.column_names))).astype(np.float32)
            cols = [ids] + [pa.array(data[:, j]) for j in range(data.shape[1])]
            writer.write_table(pa.Table.from_arrays(cols, schema=pa.schema(fields)))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=5000)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--max-bytes", type=float, default=400.0)
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)

    schema = synthetic_schema(args.features)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, {platform.platform()}, "
          f"Python {platform.python_version()}")
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    with tempfile.TemporaryDirectory(prefix="nba-bench-") as tmp:
        data = Path(tmp) / "customers.parquet"
        t0 = time.perf_counter()
        write_parquet(data, schema, args.rows)
        print(f"generated {args.rows:,} x {args.features} in {time.perf_counter() - t0:.1f} s "
              f"({data.stat().st_size / 1e6:.0f} MB parquet)")
        with EmbeddedRedis() as server:
            client = server.client()
            version = client.info("server").get("valkey_version") or client.info("server").get(
                "redis_version")
            print(f"server: {Path(server.binary).name} {version} on a unix socket")
            before = int(client.info("memory")["used_memory"])
            t0 = time.perf_counter()
            report = load_file(data, client, schema, batch_size=args.batch_size,
                               progress=args.progress)
            elapsed = time.perf_counter() - t0
            after = int(client.info("memory")["used_memory"])
            keys = int(client.dbsize())
            # Spot-check that what was stored is what was generated.
            probe = pq.read_table(data).slice(args.rows // 2, 1).to_pylist()[0]
            blob = client.get(features_key(str(probe["customer_id"])))
            assert isinstance(blob, bytes), "probe customer not stored"
            stored = unpack(schema, blob)
            expected = np.array([probe[n] for n in schema.column_names], dtype=np.float32)
            assert stored.vector.tobytes() == expected.tobytes(), "stored vector differs"
            client.close()
    per_customer = (after - before) / max(keys, 1)
    print(f"loaded: {report.loaded:,} rejected: {report.rejected:,} keys: {keys:,}")
    print(f"elapsed: {elapsed:.1f} s  throughput: {report.loaded / elapsed:,.0f} rows/s")
    print(f"memory: {(after - before) / 1e6:.1f} MB used_memory delta, "
          f"{per_customer:.0f} bytes per customer")
    ok = elapsed <= args.max_seconds and per_customer <= args.max_bytes
    if args.rows == 1_000_000 and args.features == 60:
        print(f"targets: time {'OK' if elapsed <= args.max_seconds else 'MISSED'} "
              f"(<= {args.max_seconds:.0f} s), memory "
              f"{'OK' if per_customer <= args.max_bytes else 'MISSED'} "
              f"(<= {args.max_bytes:.0f} B)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
