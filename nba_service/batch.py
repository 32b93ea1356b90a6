"""Outbound / batch decisioning: `nba batch decide FILE --channel EMAIL --out results.parquet`.

The batch path runs the service's own `Runtime` in process: the same catalog, model, Decider,
contact policies, budgets and decision log as `nba serve`, so a campaign list is decided exactly
as the real-time API would decide each customer (an outbound impression recorded later through
RecordOutcome finds its decision). What it saves over calling the server is the transport: no
gRPC, no protobuf, no per-request task switch across processes. Customers are read from the
file in chunks; inside a chunk `concurrency` decisions run at once so their store round trips
overlap. The decision log writer is given time to catch up whenever its queue is half full, so
a batch never makes it drop entries.

Output: one row per served action (`rank` 1..limit), and one row with `rank` 0 and an empty
`action_id` for a customer who got nothing, so every input customer appears.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from tqdm import tqdm

from nba_service.engine.catalog import CHANNELS
from nba_service.runtime import Runtime
from nba_service.settings import Settings, load_settings
from nba_service.types import Decision, DecisionRequest

__all__ = ["RESULT_SCHEMA", "BatchError", "BatchReport", "read_customer_ids", "run_batch"]

RESULT_SCHEMA = pa.schema([
    ("customer_id", pa.string()), ("decision_id", pa.string()), ("rank", pa.int16()),
    ("action_id", pa.string()), ("action_type", pa.string()), ("priority", pa.float64()),
    ("propensity", pa.float64()), ("value", pa.float64()),
    ("selection_probability", pa.float64()), ("channel", pa.string()),
    ("degraded", pa.bool_()), ("model_version", pa.string()), ("catalog_version", pa.string()),
])


class BatchError(ValueError):
    """Bad input file, column or channel; the message names it."""


@dataclass
class BatchReport:
    customers: int = 0
    served_rows: int = 0
    empty: int = 0
    degraded: int = 0  # answered with imputed features or the fallback set (see the results)
    seconds: float = 0.0
    chunk_rates: list[float] = field(default_factory=list)  # decisions/s per chunk

    @property
    def rate(self) -> float:
        return self.customers / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return (f"decided {self.customers} customers in {self.seconds:.1f} s "
                f"({self.rate:,.0f}/s); {self.served_rows} actions served, "
                f"{self.empty} customers with none; {self.degraded} degraded answers")


def read_customer_ids(path: Path, id_column: str, chunk: int) -> Iterator[list[str]]:
    """Customer ids from a Parquet or CSV file, `chunk` at a time, never all in memory."""
    if not path.is_file():
        raise BatchError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            f = pq.ParquetFile(path)
            if id_column not in f.schema_arrow.names:
                raise BatchError(f"{path}: no column {id_column!r} "
                                 f"(columns: {', '.join(f.schema_arrow.names)})")
            for batch in f.iter_batches(batch_size=chunk, columns=[id_column]):
                yield [str(x) for x in batch.column(0).to_pylist() if x is not None]
        elif suffix == ".csv":
            reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 20),
                                   convert_options=pcsv.ConvertOptions(
                                       column_types={id_column: pa.string()},
                                       include_columns=[id_column]))
            for batch in reader:
                ids = [str(x) for x in batch.column(0).to_pylist() if x is not None]
                for i in range(0, len(ids), chunk):
                    yield ids[i:i + chunk]
        else:
            raise BatchError(f"{path}: expected a .parquet or .csv file")
    except (pa.ArrowException, OSError) as exc:
        raise BatchError(f"{path}: cannot read: {exc}") from None


def _rows(decisions: list[Decision], ids: list[str], channel: str,
          cols: dict[str, list[object]]) -> tuple[int, int]:
    served = empty = 0
    for cid, d in zip(ids, decisions, strict=True):
        common = (cid, d.decision_id)
        degraded = bool(d.degraded_reasons)
        if not d.actions:
            empty += 1
            for name, v in zip(RESULT_SCHEMA.names, (
                    *common, 0, "", "", 0.0, 0.0, 0.0, 0.0, channel, degraded,
                    d.model_version, d.catalog_version), strict=True):
                cols[name].append(v)
        for a in d.actions:
            served += 1
            for name, v in zip(RESULT_SCHEMA.names, (
                    *common, a.rank, a.action_id, a.action_type, a.priority, a.propensity,
                    a.value, a.selection_probability, channel, degraded, d.model_version,
                    d.catalog_version), strict=True):
                cols[name].append(v)
    return served, empty


async def run_batch(
    runtime: Runtime,
    chunks: Iterator[list[str]],
    out: Path,
    channel: str,
    *,
    placement: str = "",
    limit: int = 1,
    concurrency: int = 64,
    progress: bool = True,
    total: int | None = None,
) -> BatchReport:
    if channel not in CHANNELS:
        raise BatchError(f"--channel: unknown channel {channel!r} (known: {', '.join(CHANNELS)})")
    report = BatchReport()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    t_start = time.perf_counter()
    log = runtime.decision_log
    with pq.ParquetWriter(tmp, RESULT_SCHEMA) as writer, \
            tqdm(total=total, unit="customer", desc="batch decide", disable=not progress) as bar:
        for ids in chunks:
            t0 = time.perf_counter()
            decisions: list[Decision] = []
            for i in range(0, len(ids), concurrency):
                part = ids[i:i + concurrency]
                decisions += await asyncio.gather(*(runtime.decide(DecisionRequest(
                    customer_id=cid, channel=channel, placement=placement, limit=limit))
                    for cid in part))
                if log is not None and log.backlog * 2 >= log.capacity:
                    await log.flush()  # backpressure: the batch waits, the log drops nothing
            cols: dict[str, list[object]] = {n: [] for n in RESULT_SCHEMA.names}
            served, empty = _rows(decisions, ids, channel, cols)
            report.degraded += sum(1 for d in decisions if d.degraded_reasons)
            writer.write_table(pa.table(cols, schema=RESULT_SCHEMA))
            report.customers += len(ids)
            report.served_rows += served
            report.empty += empty
            dt = time.perf_counter() - t0
            report.chunk_rates.append(len(ids) / dt if dt else 0.0)
            bar.update(len(ids))
    if log is not None:
        await log.flush()
    tmp.replace(out)  # readers never see a half-written result file
    report.seconds = time.perf_counter() - t_start
    return report


def _count_rows(path: Path) -> int | None:
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except (pa.ArrowInvalid, OSError):
            return None
    return None


async def _main(settings: Settings, args: argparse.Namespace) -> BatchReport:
    channel = args.channel.upper()
    if channel not in CHANNELS:
        raise BatchError(f"--channel: unknown channel {channel!r} (known: {', '.join(CHANNELS)})")
    # Read the first chunk before starting anything: a bad file fails fast and writes nothing.
    chunks = read_customer_ids(args.file, args.id_column, args.chunk)
    first = next(chunks, [])
    runtime = Runtime(settings)
    await runtime.start()
    try:
        if not runtime.ready():
            raise BatchError(f"not ready to decide: {runtime.details()}")
        return await run_batch(
            runtime, itertools.chain([first], chunks), args.out, channel,
            placement=args.placement, limit=args.limit, concurrency=args.concurrency,
            progress=not args.no_progress, total=_count_rows(args.file))
    finally:
        await runtime.stop()


def run_batch_cli(args: argparse.Namespace) -> int:
    settings = load_settings(
        redis_url=args.redis_url, model_path=args.model, model_registry=args.registry,
        catalog=args.catalog, feature_schema=args.features,
        decision_log=False if args.no_log else None, redis_timeout_s=args.store_timeout,
    )
    if not settings.redis_url:
        raise BatchError("set NBA_REDIS_URL or --redis-url (the store with the customers)")
    if args.limit < 1 or args.chunk < 1 or args.concurrency < 1:
        raise BatchError("--limit, --chunk and --concurrency must be >= 1")
    report = asyncio.run(_main(settings, args))
    print(report.summary())
    return 0
