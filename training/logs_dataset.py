"""Training sets from the service's own logs (`nba logs export`, docs/closed-loop.md).

`DIR/impressions/date=.../channel=.../part-*.parquet` holds one labelled row per served action
with the exact encoded model input the service scored it with (point-in-time: the features as
they were at decision time, read from the decision log, never recomputed from today's store),
the served action, its selection probability and the outcome. Every part file is a
`Dataset.save` file, so each one is checked against the schema hash on load. Rows logged under
another schema are exported to `DIR/impressions_schema_<hash>/` and are not read here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from features.schema import FeatureSchema
from training.dataset import Dataset, DatasetError

__all__ = ["LogRows", "concat_datasets", "load_logs", "log_files"]

logger = logging.getLogger("nba.training")
# Per-row columns of the export kept next to the Dataset (for filtering and reports).
SIDE_COLUMNS = ("decision_id", "decision_ts", "model_version", "explored", "control_group",
                "reward", "value")


@dataclass
class LogRows:
    dataset: Dataset
    columns: dict[str, np.ndarray]  # SIDE_COLUMNS present in the files, row-aligned
    files: list[Path]


def log_files(export_dir: str | Path) -> list[Path]:
    """The impressions part files of an export, in path order (dates sort as text)."""
    root = Path(export_dir) / "impressions"
    if not root.is_dir():
        raise DatasetError(f"{export_dir}: no impressions/ directory (run `nba logs export`)")
    return sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))


def concat_datasets(parts: Sequence[Dataset]) -> Dataset:
    """One dataset from several with the same schema; action ids are merged by name."""
    if not parts:
        raise DatasetError("no datasets to concatenate")
    first = parts[0]
    ids: dict[str, int] = {}
    for part in parts:
        if part.schema_hash != first.schema_hash:
            raise DatasetError("datasets were built for different schemas")
        for a in part.action_ids:
            ids.setdefault(a, len(ids))
    remap = [np.array([ids[a] for a in p.action_ids], dtype=np.int32) for p in parts]
    starts = sorted(p.window[0] for p in parts if p.window[0])
    ends = sorted(p.window[1] for p in parts if p.window[1])
    policies = sorted({p.logging_policy for p in parts})
    return Dataset(
        x=np.concatenate([p.x for p in parts]),
        y=np.concatenate([p.y for p in parts]),
        action_idx=np.concatenate([m[p.action_idx] if len(p) else p.action_idx
                                   for m, p in zip(remap, parts, strict=True)]),
        channel=np.concatenate([p.channel for p in parts]),
        propensity_logged=np.concatenate([p.propensity_logged for p in parts]),
        customer_id=np.concatenate([p.customer_id for p in parts]),
        feature_names=first.feature_names, action_ids=list(ids), schema_hash=first.schema_hash,
        window=(starts[0] if starts else "", ends[-1] if ends else ""),
        logging_policy=policies[0] if len(policies) == 1 else "+".join(policies),
        extra={"parts": len(parts)},
    )


def _parse_ts(value: str | datetime | None) -> np.datetime64 | None:
    if value is None:
        return None
    ts = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return np.datetime64(int(ts.timestamp() * 1000), "ms")


def load_logs(
    export_dir: str | Path,
    schema: FeatureSchema,
    *,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    model_versions: Sequence[str] | None = None,
    include_control: bool = False,
) -> LogRows:
    """Every exported impression of `schema`, optionally within [since, until) by decision
    time and served by the given model versions. Control-group decisions (no model behind
    them) are left out unless asked for."""
    files = log_files(export_dir)
    parts: list[Dataset] = []
    side: dict[str, list[np.ndarray]] = {c: [] for c in SIDE_COLUMNS}
    for path in files:
        part = Dataset.load(path, schema)
        names = set(pq.read_schema(path).names)
        cols = [c for c in SIDE_COLUMNS if c in names]
        table = pq.read_table(path, columns=cols)
        for c in SIDE_COLUMNS:
            if c in names:
                arr = table.column(c).to_numpy(zero_copy_only=False)
                side[c].append(arr.astype("datetime64[ms]") if c == "decision_ts" else arr)
            else:
                side[c].append(np.full(len(part), None, dtype=object))
        parts.append(part)
    if not parts:
        raise DatasetError(f"{export_dir}: the export holds no impressions yet")
    data = concat_datasets(parts)
    columns = {c: np.concatenate(v) for c, v in side.items()}
    keep = np.ones(len(data), dtype=bool)
    ts = columns["decision_ts"]
    lo, hi = _parse_ts(since), _parse_ts(until)
    if lo is not None:
        keep &= ts >= lo
    if hi is not None:
        keep &= ts < hi
    if model_versions is not None:
        keep &= np.isin(columns["model_version"].astype(str), list(model_versions))
    if not include_control and columns["control_group"].dtype == bool:
        keep &= ~columns["control_group"]
    rows = np.flatnonzero(keep)
    if len(rows) < len(data):
        data = data.subset(rows)
        columns = {c: v[rows] for c, v in columns.items()}
    if len(data):
        stamps = columns["decision_ts"]
        if stamps.dtype.kind == "M":
            data.window = (_iso(stamps.min()), _iso(stamps.max()))
    data.logging_policy = "nba-service"
    data.extra = {"source": "decision-log", "export_dir": str(export_dir), "files": len(files)}
    logger.info("read %d logged impressions from %d files", len(data), len(files))
    return LogRows(dataset=data, columns=columns, files=files)


def _iso(ts: np.datetime64) -> str:
    ms = int(ts.astype("datetime64[ms]").astype(np.int64))
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()
