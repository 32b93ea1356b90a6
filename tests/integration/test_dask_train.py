"""Distributed training with lightgbm.dask on a real two-worker LocalCluster: from an in-memory
dataset, and from Parquet files the workers read through a scheduler address (the code path a
real cluster uses)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from features.schema import FeatureSchema
from nba_service.engine.catalog import Catalog
from nba_service.scoring.artifact import load_artifact
from training.__main__ import main
from training.config import TrainConfig
from training.dask_train import (
    run_training_parquet,
    train_propensity_model_dask,
    valid_mask,
)
from training.dataset import Dataset, simulate_impressions
from training.simulate import Simulator
from training.train import auc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
CHANNELS = ["WEB", "CALL_CENTRE", "BRANCH", "MOBILE_APP"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as c:
        yield c


@pytest.fixture(scope="module")
def data(demo_schema: FeatureSchema, demo_catalog: Catalog) -> Dataset:
    sim = Simulator(demo_schema, demo_catalog, seed=21)
    return simulate_impressions(sim, 3000, 3, CHANNELS, seed=5)


def test_hash_split_is_stable_and_close_to_the_fraction() -> None:
    ids = np.array([f"C{i:07d}" for i in range(20_000)], dtype=object)
    mask = valid_mask(ids, 0.2)
    assert abs(mask.mean() - 0.2) < 0.01
    np.testing.assert_array_equal(mask, valid_mask(ids[::-1], 0.2)[::-1])  # per id, not order


def test_dask_training_from_memory_on_two_workers(
    cluster: Any, data: Dataset, demo_schema: FeatureSchema, tmp_path: Path,
) -> None:
    from distributed import Client

    with Client(cluster) as client:
        result = train_propensity_model_dask(
            demo_schema, client, dataset=data, params={"learning_rate": 0.1, "num_leaves": 15},
            num_boost_round=80, early_stopping_rounds=10, seed=3,
        )
    m = result.metrics
    assert m["n_workers"] == 2
    held = valid_mask(data.customer_id, 0.2)
    assert m["n_valid"] == int(held.sum()) and m["n_train"] == int((~held).sum())
    assert 1 <= m["best_iteration"] <= 80
    assert m["auc"] > 0.62
    p = result.booster.predict(data.x[held])
    assert auc(data.y[held], p) == pytest.approx(m["auc"])
    assert result.booster.num_trees() == m["best_iteration"]


def test_dask_training_from_parquet_through_the_scheduler_address(
    cluster: Any, data: Dataset, demo_schema: FeatureSchema, demo_catalog: Catalog,
    tmp_path: Path,
) -> None:
    half = len(data) // 2
    files = tmp_path / "impressions"
    data.subset(np.arange(half)).save(files / "part-0.parquet")
    data.subset(np.arange(half, len(data))).save(files / "part-1.parquet")
    cfg = TrainConfig.model_validate({
        "name": "dask-model", "schema": "features.yaml", "catalog": "catalog.yaml", "seed": 3,
        "training": {"num_boost_round": 60, "early_stopping_rounds": 10,
                     "params": {"learning_rate": 0.1, "num_leaves": 15}},
        "dask": {"enabled": True, "scheduler": cluster.scheduler_address},
    })
    result, path = run_training_parquet(cfg, demo_schema, demo_catalog, files,
                                        tmp_path / "artifact")
    loaded = load_artifact(path, demo_schema)
    assert loaded.version.startswith("dask-model-")
    assert loaded.manifest.extra["trainer"] == "lightgbm.dask"
    assert loaded.manifest.metrics["n_workers"] == 2
    assert result.metrics["n_train"] + result.metrics["n_valid"] == len(data)
    assert result.metrics["auc"] > 0.62


def test_train_command_with_dask(tmp_path: Path, cluster: Any,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        f"schema: {examples / 'features.yaml'}\ncatalog: {examples / 'catalog.yaml'}\n"
        "simulation: {customers: 800, impressions_per_customer: 2}\n"
        "training: {num_boost_round: 20, log_every: 0}\n"
    )
    rc = main(["-q", "train", "--config", str(cfg), "--out", str(tmp_path / "m"),
               "--scheduler", cluster.scheduler_address])
    assert rc == 0
    assert "artifact:" in capsys.readouterr().out
    assert load_artifact(tmp_path / "m", FeatureSchema.from_yaml(examples / "features.yaml"))
