"""The model artifact: a directory the service verifies completely before it serves from it.

    model.txt       LightGBM text model (never pickle: loading it cannot run code)
    model.onnx      optional: the same model converted by onnxmltools (float32 ONNX Runtime)
    golden.npz      `x` float32 inputs (incl. NaN / inf rows), `y` float64 expected scores
    manifest.json   format_version, model_version, feature_names (column order), schema_hash,
                    created_at, training_window {start, end}, metrics, files {name: sha256},
                    library_versions, objective, num_trees

`load_artifact` checks, in this order and before the model text is parsed: the manifest
parses; every listed file exists with the listed sha256; the schema hash and the feature names
match the running schema. Then it parses the model, checks its feature count and names, and
replays the golden set. Any failure raises `ArtifactError` saying exactly what differed.
Last, the serving backend is built and parity-checked against LightGBM (selection.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from features.schema import DType, FeatureSchema, Source
from nba_service.scoring.base import Scorer
from nba_service.scoring.lightgbm_native import LightGBMScorer
from nba_service.scoring.selection import (
    BackendCheck,
    BackendUnavailable,
    CostModel,
    select_backend,
)

__all__ = [
    "FORMAT_VERSION",
    "GOLDEN_FILE",
    "GOLDEN_TOLERANCE",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "ONNX_FILE",
    "ArtifactError",
    "LoadedModel",
    "Manifest",
    "load_artifact",
    "read_manifest",
    "sha256_bytes",
]

FORMAT_VERSION = 1
MODEL_FILE = "model.txt"
ONNX_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
GOLDEN_FILE = "golden.npz"
GOLDEN_TOLERANCE = 1e-6
OBJECTIVES = ("binary", "cross_entropy")  # objectives whose predict() is a probability


class ArtifactError(ValueError):
    """A model artifact failed verification; the message names the file and the mismatch."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Manifest:
    format_version: int
    model_version: str
    feature_names: list[str]
    schema_hash: str
    created_at: str
    training_window: dict[str, str]
    metrics: dict[str, float]
    files: dict[str, str]
    library_versions: dict[str, str]
    objective: str
    num_trees: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "format_version": self.format_version, "model_version": self.model_version,
            "feature_names": list(self.feature_names), "schema_hash": self.schema_hash,
            "created_at": self.created_at, "training_window": dict(self.training_window),
            "metrics": dict(self.metrics), "files": dict(self.files),
            "library_versions": dict(self.library_versions), "objective": self.objective,
            "num_trees": self.num_trees,
        }
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_dict(cls, doc: object, where: str = MANIFEST_FILE) -> Manifest:
        if not isinstance(doc, Mapping):
            raise ArtifactError(f"{where}: expected a JSON object")

        def get(name: str, kind: type | tuple[type, ...]) -> Any:
            if name not in doc:
                raise ArtifactError(f"{where}: missing field {name!r}")
            value = doc[name]
            if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
                raise ArtifactError(f"{where}: field {name!r} has the wrong type "
                                    f"({type(value).__name__})")
            return value

        version = get("format_version", int)
        if version != FORMAT_VERSION:
            raise ArtifactError(f"{where}: format_version {version} is not supported "
                                f"(this service reads {FORMAT_VERSION})")
        names = get("feature_names", list)
        files = get("files", dict)
        window = get("training_window", dict)
        if not all(isinstance(n, str) for n in names):
            raise ArtifactError(f"{where}: feature_names must be strings")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise ArtifactError(f"{where}: files must map file names to sha256 hex strings")
        if set(window) != {"start", "end"}:
            raise ArtifactError(f"{where}: training_window needs exactly 'start' and 'end'")
        return cls(
            format_version=version, model_version=get("model_version", str),
            feature_names=list(names), schema_hash=get("schema_hash", str),
            created_at=get("created_at", str),
            training_window={k: str(v) for k, v in window.items()},
            metrics=dict(get("metrics", dict)), files=dict(files),
            library_versions={k: str(v) for k, v in get("library_versions", dict).items()},
            objective=get("objective", str), num_trees=get("num_trees", int),
            extra=dict(doc.get("extra") or {}),
        )


@dataclass(frozen=True)
class LoadedModel:
    """A verified model: `scorer` is the serving backend, `reference` LightGBM itself."""

    manifest: Manifest
    scorer: Scorer
    path: Path
    golden_max_diff: float
    reference: LightGBMScorer | None = None
    checks: dict[str, BackendCheck] = field(default_factory=dict)
    cost: CostModel = CostModel(0.0, 0.0)

    @property
    def version(self) -> str:
        return self.manifest.model_version

    @property
    def backend(self) -> str:
        return str(self.scorer.backend)


def read_manifest(path: str | Path) -> Manifest:
    """Parse `manifest.json` of an artifact directory (no file or model checks)."""
    mpath = Path(path) / MANIFEST_FILE
    try:
        raw = mpath.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{mpath}: missing (not a model artifact directory?)") from None
    except OSError as exc:
        raise ArtifactError(f"{mpath}: cannot read: {exc.strerror}") from None
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{mpath}: not valid JSON: {exc}") from None
    return Manifest.from_dict(doc, str(mpath))


def load_artifact(path: str | Path, schema: FeatureSchema, backend: str = "lightgbm",
                  compiled_mode: str = "shared") -> LoadedModel:
    """Verify an artifact directory against `schema` and return its scorer (see module doc).

    `backend` is `auto` (the fastest that passes parity) or a name in `selection.BACKENDS`;
    the default, `lightgbm`, skips the other backends (training and tooling use it).
    """
    root = Path(path)
    manifest = read_manifest(root)
    blobs = _verified_files(root, manifest)
    if manifest.schema_hash != schema.hash:
        raise ArtifactError(
            f"{root}: schema_hash {manifest.schema_hash} does not match the running schema "
            f"{schema.name!r} ({schema.hash})"
        )
    _check_feature_names(root, manifest.feature_names, schema.column_names)
    if manifest.objective not in OBJECTIVES:
        raise ArtifactError(f"{root}: objective {manifest.objective!r} does not produce "
                            f"probabilities (supported: {', '.join(OBJECTIVES)})")

    # Parse the very bytes that were hashed: re-reading the file could see a different one.
    try:
        text = blobs[MODEL_FILE].decode("utf-8")
        scorer = LightGBMScorer.from_string(text, manifest.model_version)
    except Exception as exc:  # lightgbm raises LightGBMError or ValueError on bad text
        raise ArtifactError(f"{root / MODEL_FILE}: cannot parse LightGBM model: {exc}") from None
    if scorer.num_feature != len(schema.column_names):
        raise ArtifactError(
            f"{root / MODEL_FILE}: model has {scorer.num_feature} features, schema has "
            f"{len(schema.column_names)}"
        )
    _check_feature_names(root / MODEL_FILE, scorer.feature_names, schema.column_names)
    scorer.feature_names = list(schema.column_names)
    golden_x, diff = _replay_golden(root, blobs[GOLDEN_FILE], scorer)
    if backend == "lightgbm":
        return LoadedModel(manifest=manifest, scorer=scorer, path=root, golden_max_diff=diff,
                           reference=scorer)
    action_columns = [i for i, s in enumerate(schema.features) if s.source is Source.ACTION]
    categorical = [i for i, s in enumerate(schema.features) if s.dtype is DType.CATEGORICAL]
    try:
        chosen = select_backend(backend, scorer, text, blobs.get(ONNX_FILE), golden_x,
                                action_columns, categorical, compiled_mode)
    except BackendUnavailable as exc:
        raise ArtifactError(f"{root}: {exc}") from None
    return LoadedModel(manifest=manifest, scorer=chosen.scorer, path=root, golden_max_diff=diff,
                       reference=scorer, checks=chosen.checks, cost=chosen.cost)


def _verified_files(root: Path, manifest: Manifest) -> dict[str, bytes]:
    for required in (MODEL_FILE, GOLDEN_FILE):
        if required not in manifest.files:
            raise ArtifactError(f"{root / MANIFEST_FILE}: 'files' does not list {required}")
    blobs: dict[str, bytes] = {}
    for name, expected in manifest.files.items():
        if Path(name).name != name or name in (".", "..", MANIFEST_FILE):
            raise ArtifactError(f"{root / MANIFEST_FILE}: bad file name {name!r} in 'files'")
        fpath = root / name
        try:
            data = fpath.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"{fpath}: listed in the manifest but missing") from None
        except OSError as exc:
            raise ArtifactError(f"{fpath}: cannot read: {exc.strerror}") from None
        actual = sha256_bytes(data)
        if actual != expected.lower():
            raise ArtifactError(
                f"{fpath}: sha256 mismatch: manifest says {expected}, file is {actual}"
            )
        blobs[name] = data
    return blobs


def _check_feature_names(where: Path, names: list[str], expected: list[str]) -> None:
    if names == expected:
        return
    for i, (got, want) in enumerate(zip(names, expected, strict=False)):
        if got != want:
            raise ArtifactError(
                f"{where}: feature {i} is {got!r}, the schema's column {i} is {want!r}"
            )
    raise ArtifactError(
        f"{where}: {len(names)} feature names, the schema has {len(expected)} columns"
    )


def _replay_golden(root: Path, data: bytes, scorer: LightGBMScorer
                   ) -> tuple[np.ndarray, float]:
    where = root / GOLDEN_FILE
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            x, y = npz["x"], npz["y"]
    except (ValueError, KeyError, OSError) as exc:
        raise ArtifactError(f"{where}: cannot read arrays 'x' and 'y': {exc}") from None
    if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != scorer.num_feature:
        raise ArtifactError(f"{where}: 'x' must be float32 (N, {scorer.num_feature}), "
                            f"got {x.dtype} {x.shape}")
    if y.shape != (x.shape[0],) or x.shape[0] == 0:
        raise ArtifactError(f"{where}: 'y' has shape {y.shape}, expected ({x.shape[0]},) > 0")
    got = scorer.predict(x)
    diff = np.abs(got - y.astype(np.float64))
    worst = int(np.argmax(np.where(np.isnan(diff), np.inf, diff)))
    max_diff = float(diff[worst])
    if math.isnan(max_diff) or max_diff > GOLDEN_TOLERANCE:
        raise ArtifactError(
            f"{where}: golden set mismatch: max abs diff {max_diff:.3g} > {GOLDEN_TOLERANCE:g} "
            f"at row {worst} (expected {float(y[worst])!r}, model gives {float(got[worst])!r})"
        )
    return x, max_diff
