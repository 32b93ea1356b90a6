"""Write a model artifact (format: nba_service/scoring/artifact.py, docs/training.md)."""

from __future__ import annotations

import io
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from features.schema import DType, FeatureSchema
from nba_service.scoring.artifact import (
    FORMAT_VERSION,
    GOLDEN_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    Manifest,
    load_artifact,
    sha256_bytes,
)
from nba_service.scoring.lightgbm_native import LightGBMScorer

__all__ = ["edge_rows", "export_artifact", "golden_inputs", "model_version_for"]


def model_version_for(name: str, created_at: datetime, model_sha256: str) -> str:
    """`<name>-<yyyymmddHHMMSS>-<8 hex of the model's sha256>`: sortable and content-bound."""
    return f"{name}-{created_at.astimezone(UTC):%Y%m%d%H%M%S}-{model_sha256[:8]}"


def edge_rows(schema: FeatureSchema, base: np.ndarray) -> np.ndarray:
    """Rows that exercise every missing-value and out-of-range path of a tree predictor."""
    f = len(schema.column_names)
    cat = np.array([s.dtype is DType.CATEGORICAL for s in schema.features])
    rows = [np.full(f, np.nan), np.full(f, np.inf), np.full(f, -np.inf)]
    half = base.copy()
    half[::2] = np.nan
    rows.append(half)
    huge = base.copy()
    huge[~cat] = np.where(np.arange(f)[~cat] % 2 == 0, 3.0e38, -3.0e38)
    rows.append(huge)
    unknown = base.copy()
    sizes = np.array([len(s.vocabulary) for s in schema.features], dtype=np.float64)
    unknown[cat] = sizes[cat] + 5  # a category the model never saw
    rows.append(unknown)
    negative = base.copy()
    negative[cat] = -1.0
    rows.append(negative)
    return np.vstack(rows).astype(np.float32)


def golden_inputs(
    schema: FeatureSchema, x: np.ndarray, n_rows: int, seed: int
) -> np.ndarray:
    """`n_rows` training rows (sampled without replacement, seeded) plus the edge rows."""
    if x.shape[0] == 0:
        raise ValueError("cannot build a golden set from an empty matrix")
    rng = np.random.default_rng([seed, 5])
    take = rng.choice(x.shape[0], size=min(n_rows, x.shape[0]), replace=False)
    sample = x[np.sort(take)].astype(np.float32)
    return np.vstack([sample, edge_rows(schema, sample[0])])


def export_artifact(
    booster: lgb.Booster,
    schema: FeatureSchema,
    out_dir: str | Path,
    *,
    name: str,
    golden_x: np.ndarray,
    metrics: Mapping[str, float | int],
    training_window: tuple[str, str],
    created_at: datetime | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `out_dir` as a verified artifact and return it.

    Files are written into a temporary sibling directory, verified with `load_artifact` (the
    service's own check), and only then renamed into place, so `out_dir` is either a
    complete, valid artifact or absent.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty (pass overwrite=True)")
    created = (created_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    text = booster.model_to_string()
    model_bytes = text.encode("utf-8")
    if booster.num_feature() != len(schema.column_names):
        raise ValueError(f"model has {booster.num_feature()} features, schema has "
                         f"{len(schema.column_names)}")
    x = np.ascontiguousarray(golden_x, dtype=np.float32)
    # Expected scores come from the text as written, not the in-memory booster, so the golden
    # set pins what a loader of model.txt will compute.
    y = LightGBMScorer.from_string(text, "golden").predict(x)
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    golden_bytes = buf.getvalue()
    model_sha = sha256_bytes(model_bytes)
    objective = next((line.split("=", 1)[1].split()[0] for line in text.splitlines()
                      if line.startswith("objective=")), "unknown")
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        model_version=model_version_for(name, created, model_sha),
        feature_names=list(schema.column_names),
        schema_hash=schema.hash,
        created_at=created.isoformat(),
        training_window={"start": training_window[0], "end": training_window[1]},
        metrics={k: (float(v) if isinstance(v, float) else int(v)) for k, v in metrics.items()},
        files={MODEL_FILE: model_sha, GOLDEN_FILE: sha256_bytes(golden_bytes)},
        library_versions={"lightgbm": lgb.__version__, "numpy": np.__version__,
                          "python": platform.python_version()},
        objective=objective,
        num_trees=int(booster.num_trees()),
        extra=dict(extra or {}),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / MODEL_FILE).write_bytes(model_bytes)
        (tmp / GOLDEN_FILE).write_bytes(golden_bytes)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n",
                                         encoding="utf-8")
        load_artifact(tmp, schema)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
