"""Backend selection at load, the registry watcher and reloads, on real artifacts."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from features.schema import FeatureSchema
from nba_service.engine.catalog import load_catalog
from nba_service.scoring.artifact import MANIFEST_FILE, MODEL_FILE, ArtifactError, load_artifact
from nba_service.scoring.compiled import CompiledScorer
from nba_service.scoring.lightgbm_native import LightGBMScorer
from nba_service.scoring.onnx_runtime import OnnxScorer
from nba_service.scoring.registry import ModelHolder, publish, read_current, version_dir
from nba_service.scoring.selection import PREFERENCE, select_backend, stress_rows
from nba_service.scoring.watcher import ModelWatcher
from training.dataset import Dataset, simulate_impressions
from training.export import export_artifact, golden_inputs
from training.simulate import Simulator
from training.train import train_propensity_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema.from_yaml(EXAMPLES / "features.yaml")


@pytest.fixture(scope="module")
def data(schema: FeatureSchema) -> Dataset:
    catalog = load_catalog(EXAMPLES / "catalog.yaml", schema)
    return simulate_impressions(Simulator(schema, catalog, 8), 300, 4, ["WEB", "CHAT"], seed=8)


def _export(data: Dataset, schema: FeatureSchema, out: Path, seed: int, minute: int,
            **params: object) -> Path:
    result = train_propensity_model(data, schema, params={"num_leaves": 15, **params},
                                    seed=seed, num_boost_round=25, early_stopping_rounds=0,
                                    log_every=0)
    return export_artifact(result.booster, schema, out, name="propensity",
                           golden_x=golden_inputs(schema, data.x, 48, seed),
                           metrics=result.metrics, training_window=data.window,
                           created_at=datetime(2024, 3, 1, 12, minute, tzinfo=UTC))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, data: Dataset,
              schema: FeatureSchema) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sel")
    return {
        "a": _export(data, schema, root / "a", seed=1, minute=1),
        "b": _export(data, schema, root / "b", seed=2, minute=2),
        "zero": _export(data, schema, root / "zero", seed=3, minute=3, zero_as_missing=True),
    }


def test_auto_serves_the_compiled_backend_after_checking_all(
        artifacts: dict[str, Path], schema: FeatureSchema) -> None:
    model = load_artifact(artifacts["a"], schema, backend="auto")
    assert isinstance(model.scorer, CompiledScorer) and model.backend == "compiled"
    assert set(model.checks) == set(PREFERENCE) and all(c.ok for c in model.checks.values())
    assert model.checks["compiled"].max_diff is not None
    assert model.checks["compiled"].max_diff <= 1e-6
    assert model.cost.per_row_us >= 0 and model.cost.estimate_us(100) > 0
    with np.load(artifacts["a"] / "golden.npz") as g:
        x, y = g["x"], g["y"]
    np.testing.assert_allclose(model.scorer.predict(x), y, rtol=0, atol=1e-6)
    # explanations still come from LightGBM's TreeSHAP
    contrib = model.scorer.contributions(x[:3])  # type: ignore[attr-defined]
    assert contrib.shape == (3, len(schema.column_names) + 1)


def test_each_backend_can_be_forced(artifacts: dict[str, Path], schema: FeatureSchema) -> None:
    kinds = {"lightgbm": LightGBMScorer, "compiled": CompiledScorer, "onnx": OnnxScorer}
    for name, kind in kinds.items():
        model = load_artifact(artifacts["a"], schema, backend=name)
        assert isinstance(model.scorer, kind) and model.scorer.version == model.version


def test_zero_as_missing_model_has_no_onnx_and_refuses_it(
        artifacts: dict[str, Path], schema: FeatureSchema) -> None:
    manifest = json.loads((artifacts["zero"] / MANIFEST_FILE).read_text())
    assert "model.onnx" not in manifest["files"]
    assert "max abs diff" in manifest["extra"]["onnx_omitted"]
    model = load_artifact(artifacts["zero"], schema, backend="auto")
    assert model.backend == "compiled" and not model.checks["onnx"].ok
    with pytest.raises(ArtifactError, match="no model.onnx"):
        load_artifact(artifacts["zero"], schema, backend="onnx")
    with pytest.raises(ArtifactError, match="unknown backend"):
        load_artifact(artifacts["a"], schema, backend="gpu")


def test_a_backend_failing_parity_is_not_served(artifacts: dict[str, Path],
                                                schema: FeatureSchema) -> None:
    """An ONNX file of a *different* model passes its own load but not parity."""
    ref = load_artifact(artifacts["a"], schema)
    other_onnx = (artifacts["b"] / "model.onnx").read_bytes()
    with np.load(artifacts["a"] / "golden.npz") as g:
        x = g["x"]
    assert isinstance(ref.scorer, LightGBMScorer)
    sel = select_backend("auto", ref.scorer, ref.scorer.model_text(), other_onnx, x)
    assert sel.scorer.backend == "compiled"
    assert not sel.checks["onnx"].ok and "max abs diff" in sel.checks["onnx"].error
    with pytest.raises(ValueError, match="backend onnx: max abs diff"):
        select_backend("onnx", ref.scorer, ref.scorer.model_text(), other_onnx, x)


def test_stress_rows_mix_edge_values_and_keep_codes_integral() -> None:
    golden = np.arange(40, dtype=np.float32).reshape(8, 5)
    rows = stress_rows(golden, categorical_columns=[4], n=400)
    assert rows.shape == (400, 5) and rows.dtype == np.float32
    assert np.isnan(rows).any() and np.isinf(rows).any() and (rows == 0).any()
    codes = rows[:, 4][np.isfinite(rows[:, 4])]
    assert np.array_equal(codes, np.trunc(codes)) and (codes < 0).any()
    np.testing.assert_array_equal(rows, stress_rows(golden, categorical_columns=[4], n=400))


def _corrupt_copy(src: Path, registry: Path, version: str) -> None:
    dest = version_dir(registry, "propensity", version)
    shutil.copytree(src, dest)
    text = (dest / MODEL_FILE).read_text()
    (dest / MODEL_FILE).write_text(text.replace("leaf_value=", "leaf_value=1", 1))
    (registry / "propensity" / "current").write_text(version + "\n")


def test_watcher_swaps_once_refuses_bad_versions_and_reloads_on_demand(
        artifacts: dict[str, Path], schema: FeatureSchema, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    v1 = publish(artifacts["a"], registry, schema)
    holder = ModelHolder(schema, "propensity", backend="auto")
    changes: list[str | None] = []

    async def on_change() -> None:
        changes.append(holder.version)

    watcher = ModelWatcher(registry, [holder], on_change=on_change)

    async def scenario() -> None:
        assert await watcher.poll_once() is True and holder.version == v1
        assert await watcher.poll_once() is False  # nothing new: no load
        v2 = publish(artifacts["b"], registry, schema)
        assert await watcher.poll_once() is True and holder.version == v2
        assert holder.model is not None and holder.model.backend == "compiled"
        _corrupt_copy(artifacts["a"], registry, "broken-1")
        assert await watcher.poll_once() is False and holder.version == v2
        assert holder.failures == 1 and "sha256 mismatch" in (holder.last_error or "")
        assert holder.failed_version == "broken-1"
        assert await watcher.poll_once() is False and holder.failures == 1  # not retried
        outcome = await watcher.reload()  # an explicit reload retries it
        assert not outcome.changed and outcome.version == v2 and "sha256" in outcome.error
        assert holder.failures == 2
        assert watcher.details()["model_swaps"] == 2 and changes == [v1, v2]
        assert read_current(registry) == "broken-1"

    asyncio.run(scenario())


def test_watcher_task_starts_and_stops(artifacts: dict[str, Path], schema: FeatureSchema,
                                       tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    holder = ModelHolder(schema, "propensity", backend="lightgbm")
    watcher = ModelWatcher(registry, [holder])

    async def scenario() -> None:
        watcher.start(0.01)
        v1 = publish(artifacts["a"], registry, schema)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while holder.version != v1:
            assert loop.time() < deadline, "the watcher never loaded the published model"
            await asyncio.sleep(0.01)
        await watcher.stop()
        assert watcher._task is None and watcher.polls >= 1

    asyncio.run(scenario())


def test_holder_keeps_the_old_model_on_any_failure(artifacts: dict[str, Path],
                                                   schema: FeatureSchema,
                                                   tmp_path: Path) -> None:
    holder = ModelHolder(schema, backend="auto")
    assert holder.try_load(artifacts["a"])
    served = holder.model
    wrong = Path(shutil.copytree(artifacts["b"], tmp_path / "wrong"))
    doc = json.loads((wrong / MANIFEST_FILE).read_text())
    doc["schema_hash"] = "0" * 16
    (wrong / MANIFEST_FILE).write_text(json.dumps(doc))
    assert not holder.try_load(wrong) and holder.model is served
    assert "schema_hash" in (holder.last_error or "")
    health = holder.health()
    assert health["failures"] == 1 and health["backend"] == "compiled"
    assert "compiled ok" in str(health["backend_checks"])
    # a booster LightGBM itself cannot parse never gets near the selection
    (wrong / MODEL_FILE).write_text("garbage")
    assert not holder.try_load(wrong) and holder.model is served
    assert holder.failures == 2
