"""Artifact export/verification, the registry layout and the ModelHolder's safe swap."""

from __future__ import annotations

import io
import json
import shutil
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from features.schema import FeatureSchema
from nba_service.engine.catalog import Catalog, load_catalog
from nba_service.scoring.artifact import (
    GOLDEN_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    ArtifactError,
    load_artifact,
    sha256_bytes,
)
from nba_service.scoring.registry import (
    ModelHolder,
    RegistryError,
    list_versions,
    publish,
    read_current,
    set_current,
    version_dir,
)
from training.dataset import Dataset, simulate_impressions
from training.export import export_artifact, golden_inputs
from training.simulate import Simulator
from training.train import TrainResult, train_propensity_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema.from_yaml(EXAMPLES / "features.yaml")


@pytest.fixture(scope="module")
def catalog(schema: FeatureSchema) -> Catalog:
    return load_catalog(EXAMPLES / "catalog.yaml", schema)


@pytest.fixture(scope="module")
def data(schema: FeatureSchema, catalog: Catalog) -> Dataset:
    return simulate_impressions(Simulator(schema, catalog, 1), 500, 4, ["WEB", "BRANCH"], seed=1)


def _train(data: Dataset, schema: FeatureSchema, seed: int) -> TrainResult:
    return train_propensity_model(data, schema, params={"num_leaves": 7}, seed=seed,
                                  num_boost_round=20, early_stopping_rounds=0, log_every=0)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, data: Dataset,
          schema: FeatureSchema) -> Path:
    result = _train(data, schema, seed=1)
    out = tmp_path_factory.mktemp("artifacts") / "a1"
    return export_artifact(
        result.booster, schema, out, name="propensity",
        golden_x=golden_inputs(schema, data.x, 64, 1), metrics=result.metrics,
        training_window=data.window, created_at=datetime(2024, 2, 1, 12, 30, tzinfo=UTC),
    )


@pytest.fixture
def art(built: Path, tmp_path: Path) -> Path:
    """A private copy each test may tamper with."""
    return Path(shutil.copytree(built, tmp_path / "art"))


def _manifest(path: Path) -> dict[str, object]:
    return json.loads((path / MANIFEST_FILE).read_text())  # type: ignore[no-any-return]


def _write_manifest(path: Path, doc: dict[str, object]) -> None:
    (path / MANIFEST_FILE).write_text(json.dumps(doc))


def test_round_trip(art: Path, schema: FeatureSchema, data: Dataset) -> None:
    loaded = load_artifact(art, schema)
    m = loaded.manifest
    model_sha = sha256_bytes((art / MODEL_FILE).read_bytes())
    assert m.model_version == f"propensity-20240201123000-{model_sha[:8]}"
    assert m.feature_names == schema.column_names and m.schema_hash == schema.hash
    assert m.created_at == "2024-02-01T12:30:00+00:00"
    assert m.training_window == {"start": data.window[0], "end": data.window[1]}
    assert m.files[MODEL_FILE] == model_sha and m.objective == "binary" and m.num_trees == 20
    # model.onnx is verified at export and pinned with the converter's versions.
    assert set(m.library_versions) == {"lightgbm", "numpy", "python", "onnx", "onnxmltools",
                                       "onnxruntime"}
    assert m.files["model.onnx"] == sha256_bytes((art / "model.onnx").read_bytes())
    assert {"auc", "logloss", "n_train", "n_valid", "best_iteration"} <= set(m.metrics)
    with np.load(art / GOLDEN_FILE) as g:
        x, y = g["x"], g["y"]
    assert x.dtype == np.float32 and y.dtype == np.float64 and len(x) == 64 + 7
    assert np.isnan(x).all(axis=1).any() and np.isinf(x).any()
    np.testing.assert_array_equal(loaded.scorer.predict(x), y)
    assert loaded.golden_max_diff == 0.0
    assert not list(art.parent.glob(".*")), "no temporary directories left behind"


def test_export_refuses_to_overwrite(built: Path, data: Dataset, schema: FeatureSchema) -> None:
    booster = lgb.Booster(model_file=str(built / MODEL_FILE))
    with pytest.raises(FileExistsError, match="not empty"):
        export_artifact(booster, schema, built, name="x", golden_x=data.x[:4],
                        metrics={}, training_window=data.window)


def test_missing_manifest(art: Path, schema: FeatureSchema) -> None:
    (art / MANIFEST_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"manifest\.json: missing"):
        load_artifact(art, schema)


def test_manifest_not_json_or_incomplete(art: Path, schema: FeatureSchema) -> None:
    doc = _manifest(art)
    (art / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(art, schema)
    _write_manifest(art, {k: v for k, v in doc.items() if k != "schema_hash"})
    with pytest.raises(ArtifactError, match="missing field 'schema_hash'"):
        load_artifact(art, schema)
    _write_manifest(art, {**doc, "format_version": 99})
    with pytest.raises(ArtifactError, match="format_version 99"):
        load_artifact(art, schema)


def test_tampered_model_is_caught_before_parsing(art: Path, schema: FeatureSchema) -> None:
    expected = _manifest(art)["files"][MODEL_FILE]  # type: ignore[index]
    (art / MODEL_FILE).write_text("this is not a LightGBM model")
    actual = sha256_bytes((art / MODEL_FILE).read_bytes())
    with pytest.raises(ArtifactError) as exc:
        load_artifact(art, schema)
    msg = str(exc.value)
    assert "model.txt: sha256 mismatch" in msg and expected in msg and actual in msg


def test_missing_listed_file(art: Path, schema: FeatureSchema) -> None:
    (art / GOLDEN_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"golden\.npz: listed in the manifest but missing"):
        load_artifact(art, schema)


def test_model_must_be_listed(art: Path, schema: FeatureSchema) -> None:
    doc = _manifest(art)
    doc["files"] = {GOLDEN_FILE: doc["files"][GOLDEN_FILE]}  # type: ignore[index]
    _write_manifest(art, doc)
    with pytest.raises(ArtifactError, match="'files' does not list model.txt"):
        load_artifact(art, schema)


def test_file_names_cannot_escape_the_directory(art: Path, schema: FeatureSchema) -> None:
    doc = _manifest(art)
    doc["files"] = {**doc["files"], "../secret": "00"}  # type: ignore[dict-item]
    _write_manifest(art, doc)
    with pytest.raises(ArtifactError, match="bad file name '../secret'"):
        load_artifact(art, schema)


def test_wrong_schema_hash(art: Path, schema: FeatureSchema) -> None:
    changed = replace(schema.features[0], default=41)
    other = FeatureSchema(features=(changed, *schema.features[1:]), name=schema.name)
    with pytest.raises(ArtifactError) as exc:
        load_artifact(art, other)
    assert f"schema_hash {schema.hash}" in str(exc.value) and other.hash in str(exc.value)


def test_reordered_feature_names(art: Path, schema: FeatureSchema) -> None:
    doc = _manifest(art)
    names = list(schema.column_names)
    names[2], names[3] = names[3], names[2]
    _write_manifest(art, {**doc, "feature_names": names})
    with pytest.raises(ArtifactError, match="feature 2 is 'balance', the schema's column 2 is "
                                            "'income'"):
        load_artifact(art, schema)


def _rewrite_golden(art: Path, x: np.ndarray, y: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    (art / GOLDEN_FILE).write_bytes(buf.getvalue())
    doc = _manifest(art)
    doc["files"][GOLDEN_FILE] = sha256_bytes(buf.getvalue())  # type: ignore[index]
    _write_manifest(art, doc)


def test_golden_mismatch(art: Path, schema: FeatureSchema) -> None:
    with np.load(art / GOLDEN_FILE) as g:
        x, y = g["x"], g["y"].copy()
    y[10] += 1e-4
    _rewrite_golden(art, x, y)
    with pytest.raises(ArtifactError, match=r"golden set mismatch: max abs diff 0\.0001 > "
                                            r"1e-06 at row 10"):
        load_artifact(art, schema)
    _rewrite_golden(art, x[:, :5], y)
    with pytest.raises(ArtifactError, match="'x' must be float32"):
        load_artifact(art, schema)


def test_model_with_other_features(art: Path, schema: FeatureSchema, data: Dataset) -> None:
    # A consistent artifact whose model was trained on fewer columns than the schema has.
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1},
                        lgb.Dataset(data.x[:, :-1], label=data.y.astype(float)), 3)
    text = booster.model_to_string().encode()
    (art / MODEL_FILE).write_bytes(text)
    doc = _manifest(art)
    doc["files"][MODEL_FILE] = sha256_bytes(text)  # type: ignore[index]
    _write_manifest(art, doc)
    with pytest.raises(ArtifactError, match="model has 37 features, schema has 38"):
        load_artifact(art, schema)


# ------------------------------------------------------------------------- registry
def test_publish_and_flip_current(
    built: Path, tmp_path: Path, schema: FeatureSchema, data: Dataset
) -> None:
    reg = tmp_path / "reg"
    assert read_current(reg) is None
    v1 = publish(built, reg, schema)
    assert read_current(reg) == v1 and list_versions(reg) == [v1]
    assert load_artifact(version_dir(reg, "propensity", v1), schema).version == v1
    assert publish(built, reg, schema) == v1  # idempotent
    second = _train(data, schema, seed=2)
    a2 = export_artifact(second.booster, schema, tmp_path / "a2", name="propensity",
                         golden_x=data.x[:8], metrics=second.metrics,
                         training_window=data.window,
                         created_at=datetime(2024, 3, 1, tzinfo=UTC))
    v2 = publish(a2, reg, schema, make_current=False)
    assert read_current(reg) == v1 and list_versions(reg) == [v1, v2]
    set_current(reg, "propensity", v2)
    assert read_current(reg) == v2
    with pytest.raises(RegistryError, match="not published"):
        set_current(reg, "propensity", "propensity-nope")
    with pytest.raises(RegistryError, match="not a valid name"):
        read_current(reg, "../etc")
    leftovers = [p.name for p in (reg / "propensity").rglob(".*")]
    assert leftovers == []


def test_publish_refuses_a_bad_artifact(art: Path, tmp_path: Path, schema: FeatureSchema) -> None:
    (art / MODEL_FILE).write_text("garbage")
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        publish(art, tmp_path / "reg", schema)
    assert read_current(tmp_path / "reg") is None


def test_current_flip_is_atomic_for_readers(
    built: Path, tmp_path: Path, schema: FeatureSchema, data: Dataset
) -> None:
    reg = tmp_path / "reg"
    v1 = publish(built, reg, schema)
    other = _train(data, schema, seed=3)
    a2 = export_artifact(other.booster, schema, tmp_path / "a2", name="propensity",
                         golden_x=data.x[:8], metrics=other.metrics, training_window=data.window)
    v2 = publish(a2, reg, schema)
    seen: set[str | None] = set()
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            seen.add(read_current(reg))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(300):
            set_current(reg, "propensity", v1 if i % 2 else v2)
    finally:
        done.set()
        thread.join()
    assert seen <= {v1, v2} and seen


def test_model_holder_keeps_the_old_model_on_failure(
    built: Path, art: Path, tmp_path: Path, schema: FeatureSchema
) -> None:
    holder = ModelHolder(schema)
    assert holder.scorer is None
    assert not holder.try_load_current(tmp_path / "empty-registry")
    assert "no current model" in (holder.last_error or "")
    assert holder.try_load(built)
    good = holder.model
    assert good is not None and holder.version == good.version and holder.last_error is None
    (art / MODEL_FILE).write_text("garbage")
    assert not holder.try_load(art)
    assert holder.model is good  # still serving the previous model
    assert "sha256 mismatch" in (holder.last_error or "")
    health = holder.health()
    assert health["version"] == good.version and health["failures"] == 1
    reg = tmp_path / "reg"
    version = publish(built, reg, schema)
    assert holder.try_load_current(reg) and holder.model is good  # same version: no reload
    (version_dir(reg, "propensity", version) / GOLDEN_FILE).write_bytes(b"x")
    fresh = ModelHolder(schema)
    assert not fresh.try_load_current(reg)
    assert "golden.npz: sha256 mismatch" in (fresh.last_error or "")
