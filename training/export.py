"""Write a model artifact (format: nba_service/scoring/artifact.py, docs/training.md)."""

from __future__ import annotations

import io
import json
import logging
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
    ONNX_FILE,
    Manifest,
    load_artifact,
    sha256_bytes,
)
from nba_service.scoring.lightgbm_native import LightGBMScorer
from nba_service.scoring.onnx_runtime import ONNX_TOLERANCE, OnnxScorer

__all__ = ["convert_to_onnx", "edge_rows", "export_artifact", "golden_inputs",
           "model_version_for", "verified_onnx"]

logger = logging.getLogger("nba.training")


def convert_to_onnx(booster: lgb.Booster) -> bytes:
    """The booster as an ONNX TreeEnsembleClassifier (onnxmltools), probabilities as a plain
    (N, 2) float tensor (no ZipMap)."""
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    n = int(booster.num_feature())
    model = convert_lightgbm(booster, name="nba-propensity",
                             initial_types=[("x", FloatTensorType([None, n]))], zipmap=False)
    for output in model.graph.output:
        # The converter declares `label` as shape [1]; it is one label per row.
        dims = output.type.tensor_type.shape.dim
        if dims and not dims[0].dim_param:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    _round_thresholds_down(model, booster)
    return bytes(model.SerializeToString())


_ZERO32 = np.float32(1e-35)  # LightGBM's kZeroThreshold: inputs with |x| <= it read as 0


def _float32_below(t: float) -> np.float32:
    """A float32 threshold `f` such that for every float32 x, ONNX's `x <= f` decides like
    LightGBM's `x <= t` in double. That is the largest float32 <= t, except next to zero, where
    LightGBM first reads |x| <= 1e-35 as 0."""
    z = float(_ZERO32)
    if -z <= t < z:
        return _ZERO32 if t >= 0 else np.nextafter(-_ZERO32, np.float32(-np.inf))
    v = np.float32(t)
    return v if float(v) <= t else np.nextafter(v, np.float32(-np.inf))


def _round_thresholds_down(model: Any, booster: lgb.Booster) -> None:
    """Make each `x <= threshold` node decide exactly like LightGBM's double comparison.

    The converter rounds thresholds to the nearest float32, which can land on a float32
    input value just above LightGBM's threshold (a training value: LightGBM puts thresholds
    a hair below them) and flip that split. Rounding down instead is exact for float32 inputs.
    A node is matched to its LightGBM split by tree, feature and nearest-float32 threshold;
    the golden-set verification afterwards catches anything this could not fix.
    """
    dump = booster.dump_model()["tree_info"]
    by_tree: list[dict[tuple[int, float], set[float]]] = []
    for tree in dump:
        splits: dict[tuple[int, float], set[float]] = {}
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "split_feature" not in node:
                continue
            if node.get("decision_type") == "<=":
                t = float(node["threshold"])
                splits.setdefault((int(node["split_feature"]), float(np.float32(t))),
                                  set()).add(float(_float32_below(t)))
            stack.extend((node["left_child"], node["right_child"]))
        by_tree.append(splits)
    for node in model.graph.node:
        if node.op_type != "TreeEnsembleClassifier":
            continue
        attrs = {a.name: a for a in node.attribute}
        modes = [m.decode() for m in attrs["nodes_modes"].strings]
        trees, feats = attrs["nodes_treeids"].ints, attrs["nodes_featureids"].ints
        values = attrs["nodes_values"].floats
        for i, mode in enumerate(modes):
            if mode != "BRANCH_LEQ" or trees[i] >= len(by_tree):
                continue
            below = by_tree[trees[i]].get((int(feats[i]), float(np.float32(values[i]))))
            if below is not None and len(below) == 1:
                values[i] = next(iter(below))


def verified_onnx(booster: lgb.Booster, x: np.ndarray, y: np.ndarray, names: list[str]
                  ) -> tuple[bytes | None, str]:
    """(ONNX bytes, '') when the conversion reproduces `y` on `x` within ONNX_TOLERANCE and
    keeps the same top-10 order, else (None, why). Zero-as-missing splits, for one, have no
    ONNX equivalent: such a model is served by the other backends."""
    try:
        data = convert_to_onnx(booster)
        got = OnnxScorer(data, "verify", names).predict(x)
    except Exception as exc:  # any converter failure just means no ONNX file
        return None, f"conversion failed: {type(exc).__name__}: {exc}"
    diff = np.abs(got - y)
    worst = float(np.max(np.where(np.isnan(diff), np.inf, diff)))
    if worst > ONNX_TOLERANCE:
        return None, f"max abs diff {worst:.3g} > {ONNX_TOLERANCE:g} on the golden set"
    top = min(10, len(y))
    if not np.array_equal(np.argsort(-y, kind="stable")[:top],
                          np.argsort(-got, kind="stable")[:top]) and not _tied(y, got, top):
        return None, "top-10 order of the golden set differs from LightGBM's"
    return data, ""


def _tied(y: np.ndarray, got: np.ndarray, top: int) -> bool:
    """True when the only top-k differences are among scores LightGBM itself ties (within
    the float32 tolerance): their order is arbitrary in both backends."""
    a = np.argsort(-y, kind="stable")[:top]
    b = np.argsort(-got, kind="stable")[:top]
    return bool(np.all(np.abs(y[a] - y[b]) <= ONNX_TOLERANCE))


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
    onnx: bool = True,
) -> Path:
    """Write `out_dir` as a verified artifact and return it.

    Files are written into a temporary sibling directory, verified with `load_artifact` (the
    service's own check, every backend included), and only then renamed into place, so
    `out_dir` is either a complete, valid artifact or absent. With `onnx`, `model.onnx` is
    added when its conversion passes `verified_onnx`; otherwise the manifest's
    `extra.onnx_omitted` says why.
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
    files = {MODEL_FILE: model_sha, GOLDEN_FILE: sha256_bytes(golden_bytes)}
    versions = {"lightgbm": lgb.__version__, "numpy": np.__version__,
                "python": platform.python_version()}
    extra_doc = dict(extra or {})
    onnx_bytes: bytes | None = None
    if onnx:
        onnx_bytes, why = verified_onnx(lgb.Booster(model_str=text), x, y,
                                        list(schema.column_names))
        if onnx_bytes is None:
            logger.warning("model.onnx left out of the artifact: %s", why)
            extra_doc["onnx_omitted"] = why
        else:
            import onnx as onnx_lib
            import onnxmltools
            import onnxruntime

            files[ONNX_FILE] = sha256_bytes(onnx_bytes)
            versions.update(onnx=onnx_lib.__version__, onnxmltools=onnxmltools.__version__,
                            onnxruntime=onnxruntime.__version__)
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
        files=files,
        library_versions=versions,
        objective=objective,
        num_trees=int(booster.num_trees()),
        extra=extra_doc,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / MODEL_FILE).write_bytes(model_bytes)
        (tmp / GOLDEN_FILE).write_bytes(golden_bytes)
        if onnx_bytes is not None:
            (tmp / ONNX_FILE).write_bytes(onnx_bytes)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n",
                                         encoding="utf-8")
        for backend in ("lightgbm", "compiled", *(("onnx",) if onnx_bytes else ())):
            load_artifact(tmp, schema, backend=backend)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
