"""Bulk materialization of BATCH features: `nba features load FILE`.

Reads Parquet or CSV in record batches, validates every row against the schema, packs the
valid rows with numpy and writes them with pipelined SETs. A row that violates the schema is
never written (not even partly) and never dropped silently: it goes to a CSV reject report with
its reasons. One SET per customer makes a re-run idempotent.
"""

from __future__ import annotations

import csv
import gzip
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import redis
from tqdm import tqdm

from features.packing import pack_many
from features.schema import DType, FeatureSchema, FeatureSpec, Source
from nba_service.store.keys import features_key

__all__ = ["LoadError", "LoadReport", "load_file"]

log = logging.getLogger(__name__)

_TRUE = pa.array(["true", "1", "yes", "y", "t"])
_FALSE = pa.array(["false", "0", "no", "n", "f"])


class LoadError(ValueError):
    """The input file cannot be loaded at all (format, id column, unreadable)."""


@dataclass(frozen=True)
class LoadReport:
    loaded: int
    rejected: int
    reasons_path: Path | None  # the reject report, None when nothing was rejected
    imputed_columns: tuple[str, ...] = ()  # batch features absent from the file: defaults
    ignored_columns: tuple[str, ...] = ()  # columns of the file that are not batch features
    elapsed_s: float = 0.0
    rejected_by_column: dict[str, int] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return (self.loaded + self.rejected) / self.elapsed_s if self.elapsed_s else 0.0

    def summary(self) -> str:
        """Human-readable result for the CLI."""
        lines = [f"loaded {self.loaded:,} customers, rejected {self.rejected:,} "
                 f"in {self.elapsed_s:.1f} s ({self.rows_per_s:,.0f} rows/s)"]
        if self.reasons_path is not None:
            lines.append(f"rejected rows and reasons: {self.reasons_path}")
        if self.imputed_columns:
            lines.append(f"imputed with defaults (not in file): {', '.join(self.imputed_columns)}")
        if self.ignored_columns:
            lines.append(f"ignored columns: {', '.join(self.ignored_columns)}")
        return "\n".join(lines)


@dataclass
class _Column:
    values: np.ndarray  # float32 encoded; NaN = missing
    invalid: np.ndarray | None  # bool mask of rows whose value violates the schema
    raw: pa.Array  # for quoting the offending value in the report


def _is_csv(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes]
    return ".csv" in suffixes


def _csv_header(path: Path) -> list[str]:
    opener: Any = gzip.open if path.suffix.lower() == ".gz" else open
    fh: IO[str]
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        return next(csv.reader(fh), [])


def _batches(
    path: Path, wanted: list[str], batch_size: int
) -> tuple[Iterator[pa.RecordBatch], int | None]:
    if _is_csv(path):
        # Everything as string: typed inference per block would fail on a late bad value
        # instead of rejecting that one row.
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            convert_options=pacsv.ConvertOptions(
                include_columns=wanted,
                column_types={name: pa.string() for name in wanted},
                strings_can_be_null=True,
            ),
        )

        def rebatch() -> Iterator[pa.RecordBatch]:
            for big in reader:
                for start in range(0, big.num_rows, batch_size):
                    yield big.slice(start, batch_size)

        return rebatch(), None
    pf = pq.ParquetFile(path)
    return pf.iter_batches(batch_size=batch_size, columns=wanted), pf.metadata.num_rows


def _columns_of(path: Path) -> list[str]:
    if _is_csv(path):
        return _csv_header(path)
    return list(pq.ParquetFile(path).schema_arrow.names)


def _to_float(arr: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """Numbers (or numeric strings) -> float64 with NaN for null; mask of unparseable values."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    try:
        as_float = pc.cast(arr, pa.float64())
        return as_float.to_numpy(zero_copy_only=False), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # Slow path only for a batch that holds a bad value: find exactly which rows.
    out = np.full(len(arr), np.nan)
    invalid = np.zeros(len(arr), dtype=bool)
    for i, v in enumerate(arr.to_pylist()):
        if v is None:
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            invalid[i] = True
    return out, invalid


def _encode_column(spec: FeatureSpec, arr: pa.Array) -> _Column:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if spec.dtype is DType.CATEGORICAL:
        strings = arr if pa.types.is_string(arr.type) else pc.cast(arr, pa.string())
        codes = pc.index_in(strings, value_set=pa.array(spec.vocabulary))
        invalid = (pc.is_null(codes).to_numpy(zero_copy_only=False)
                   & pc.is_valid(strings).to_numpy(zero_copy_only=False))
        values = pc.cast(codes, pa.float32()).to_numpy(zero_copy_only=False)
        return _Column(values.astype(np.float32), invalid, arr)
    is_text = pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)
    if spec.dtype is DType.BOOL and is_text:
        low = pc.utf8_lower(pc.utf8_trim_whitespace(arr))
        is_true = pc.is_in(low, value_set=_TRUE).to_numpy(zero_copy_only=False)
        is_false = pc.is_in(low, value_set=_FALSE).to_numpy(zero_copy_only=False)
        present = pc.is_valid(arr).to_numpy(zero_copy_only=False)
        values = np.where(is_true, 1.0, np.where(is_false, 0.0, np.nan)).astype(np.float32)
        return _Column(values, present & ~is_true & ~is_false, arr)
    floats, invalid = _to_float(arr)
    if spec.dtype is DType.BOOL:
        floats = np.where(np.isnan(floats), np.nan, floats != 0)
    with np.errstate(invalid="ignore"):
        infinite = np.isinf(floats)
    if infinite.any():
        invalid = infinite if invalid is None else invalid | infinite
    if spec.dtype is DType.INT:
        floats = np.floor(floats)
    return _Column(floats.astype(np.float32), invalid, arr)


class _Rejects:
    """The reject report, opened on the first rejected row."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self.by_column: dict[str, int] = {}
        self._fh: IO[str] | None = None
        self._writer: Any = None

    def add(self, row: int, customer_id: str | None, reasons: list[tuple[str, str]]) -> None:
        if self._writer is None:
            self._fh = open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115
            self._writer = csv.writer(self._fh)
            self._writer.writerow(["row", "customer_id", "reasons"])
        self.count += 1
        for column, _ in reasons:
            self.by_column[column] = self.by_column.get(column, 0) + 1
        self._writer.writerow(
            [row, "" if customer_id is None else customer_id,
             "; ".join(f"{col}: {why}" for col, why in reasons)]
        )

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def load_file(
    path: str | Path,
    client: redis.Redis | redis.RedisCluster,
    schema: FeatureSchema,
    batch_size: int = 5000,
    id_column: str = "customer_id",
    progress: bool = True,
    reject_report: str | Path | None = None,
    ts_ms: int | None = None,
) -> LoadReport:
    """Load a Parquet or CSV file of customers' BATCH features into the online store.

    `reject_report` defaults to `<path>.rejects.csv`; it is only written when a row is rejected.
    `ts_ms` is the write time stored in every record (default: now); batch staleness is judged
    against it. Rows are written in file order, so for a duplicated id the last row wins.
    """
    started = time.perf_counter()
    path = Path(path)
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    columns = _columns_of(path)
    if id_column not in columns:
        raise LoadError(f"{path}: no id column {id_column!r} (columns: {columns[:20]})")
    specs = schema.of(Source.BATCH)
    present = [s for s in specs if s.name in columns]
    imputed = tuple(s.name for s in specs if s.name not in columns)
    batch_names = {s.name for s in specs}
    ignored = tuple(c for c in columns if c != id_column and c not in batch_names)
    if imputed:
        log.warning("%s: %d batch feature(s) not in the file, imputed with defaults: %s",
                    path, len(imputed), ", ".join(imputed))
    if ignored:
        log.warning("%s: ignoring %d column(s) that are not batch features: %s",
                    path, len(ignored), ", ".join(ignored))
    positions = {s.name: i for i, s in enumerate(specs)}
    defaults = np.array([s.default_encoded for s in specs], dtype=np.float32)
    ts = time.time_ns() // 1_000_000 if ts_ms is None else ts_ms
    rejects = _Rejects(Path(reject_report) if reject_report else path.with_name(
        path.name + ".rejects.csv"))
    batches, total = _batches(path, [id_column] + [s.name for s in present], batch_size)
    loaded = 0
    first_row = 1
    bar = tqdm(total=total, unit="rows", unit_scale=True, disable=not progress,
               desc=f"load {path.name}")
    try:
        for rb in batches:
            n = rb.num_rows
            loaded += _load_batch(client, schema, rb, present, positions, defaults, id_column,
                                  ts, first_row, rejects)
            first_row += n
            bar.update(n)
    finally:
        bar.close()
        rejects.close()
    if rejects.count:
        log.warning("%s: rejected %d row(s), reasons in %s", path, rejects.count, rejects.path)
    return LoadReport(
        loaded=loaded,
        rejected=rejects.count,
        reasons_path=rejects.path if rejects.count else None,
        imputed_columns=imputed,
        ignored_columns=ignored,
        elapsed_s=time.perf_counter() - started,
        rejected_by_column=dict(rejects.by_column),
    )


def _load_batch(
    client: redis.Redis | redis.RedisCluster,
    schema: FeatureSchema,
    rb: pa.RecordBatch,
    present: list[FeatureSpec],
    positions: dict[str, int],
    defaults: np.ndarray,
    id_column: str,
    ts_ms: int,
    first_row: int,
    rejects: _Rejects,
) -> int:
    n = rb.num_rows
    matrix = np.empty((n, len(defaults)), dtype=np.float32)
    matrix[:] = defaults  # absent columns keep their defaults
    bad = np.zeros(n, dtype=bool)
    problems: list[tuple[str, np.ndarray, pa.Array, str]] = []

    ids = rb.column(id_column)
    if not pa.types.is_string(ids.type):
        ids = pc.cast(ids, pa.string())
    ids = pc.utf8_trim_whitespace(ids)
    no_id = pc.fill_null(pc.equal(pc.utf8_length(ids), 0), True).to_numpy(zero_copy_only=False)
    # A brace would end the key's hash tag early and split the customer over Cluster slots.
    braces = pc.fill_null(pc.match_substring_regex(ids, r"[{}]"), False)
    braces_np = braces.to_numpy(zero_copy_only=False)
    if no_id.any():
        problems.append((id_column, no_id, ids, "missing customer id"))
    if braces_np.any():
        problems.append((id_column, braces_np, ids, "customer id must not contain '{' or '}'"))

    for spec in present:
        col = _encode_column(spec, rb.column(spec.name))
        matrix[:, positions[spec.name]] = col.values
        if col.invalid is not None and col.invalid.any():
            what = {
                DType.CATEGORICAL: "unknown category",
                DType.BOOL: "not a bool",
            }.get(spec.dtype, "not a finite number")
            problems.append((spec.name, col.invalid, col.raw, what))
    for _, mask, _, _ in problems:
        bad |= mask

    id_list: list[str | None] = ids.to_pylist()
    if bad.any():
        for r in np.flatnonzero(bad).tolist():
            reasons = [
                (column, f"{what} {raw[r].as_py()!r}" if column != id_column else what)
                for column, mask, raw, what in problems
                if mask[r]
            ]
            rejects.add(first_row + r, id_list[r], reasons)
    good = np.flatnonzero(~bad)
    if not len(good):
        return 0
    packed = pack_many(schema, matrix[good] if len(good) != n else matrix, ts_ms)
    width = packed.shape[1]
    blob = packed.tobytes()
    pipe = client.pipeline(transaction=False)
    for j, i in enumerate(good.tolist()):
        pipe.execute_command("SET", features_key(id_list[i]),  # type: ignore[arg-type]
                             blob[j * width:(j + 1) * width])
    pipe.execute()
    return len(good)
