"""Distributed training with `lightgbm.dask` on a Dask cluster (a LocalCluster or a real one).

The same code runs on a laptop and on a cluster: `dask_client(scheduler=None)` starts a local
cluster; `dask_client("tcp://scheduler:8786")` connects to an existing one. Data comes either
from an in-memory `Dataset` (scattered in row partitions) or straight from Parquet files the
workers read themselves (`Dataset.save` / `nba logs export` layout), so a training set larger
than the client's memory never passes through the client.

Validation holds out customers by a stable hash of `customer_id` (pandas' `hash_pandas_object`,
keyed with a fixed key, so every worker and every run agrees). Early stopping is applied after
training: each worker would otherwise stop on its own shard's validation score, and workers
that stop at different rounds hang the collective. The booster is trained for
`num_boost_round` rounds, the validation log loss of every prefix is computed on the client from
incremental raw scores, and the model is cut at the best round with `early_stopping_rounds`
patience. The validation part is collected on the client: at most `max_valid_rows` rows
(a seeded sample beyond that).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from features.schema import DType, FeatureSchema
from training.config import REPRODUCIBLE_PARAMS, RESERVED_PARAMS, TrainConfig
from training.dataset import Dataset
from training.export import export_artifact, golden_inputs
from training.train import DEFAULT_PARAMS, TrainResult, auc, log_loss

__all__ = [
    "dask_client",
    "parquet_paths",
    "run_training_parquet",
    "train_propensity_model_dask",
    "valid_mask",
]

logger = logging.getLogger("nba.training")
_HASH_BUCKETS = 10_000


def valid_mask(customer_ids: Sequence[object] | np.ndarray, valid_fraction: float) -> np.ndarray:
    """True for rows of held-out customers; the same answer on the client and every worker."""
    import pandas as pd

    ids = pd.Series(np.asarray(customer_ids, dtype=object)).astype(str)
    h = pd.util.hash_pandas_object(ids, index=False).to_numpy()
    return np.asarray((h % _HASH_BUCKETS) < round(valid_fraction * _HASH_BUCKETS), dtype=bool)


@contextmanager
def dask_client(
    scheduler: str | None = None, n_workers: int = 2, threads_per_worker: int = 1,
    processes: bool = False,
) -> Iterator[Any]:
    """A `distributed.Client`: connected to `scheduler`, or to a LocalCluster started here."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                      processes=processes, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


def _inputs_from_dataset(
    data: Dataset, client: Any, valid_fraction: float, partitions: int
) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    import dask.array as da

    is_valid = valid_mask(data.customer_id, valid_fraction)
    train = np.flatnonzero(~is_valid)
    chunk = max(1, math.ceil(len(train) / partitions))
    x = da.from_array(data.x[train], chunks=(chunk, data.x.shape[1]))
    y = da.from_array(data.y[train].astype(np.float64), chunks=chunk)
    x, y = client.persist([x, y])
    return x, y, data.x[is_valid], data.y[is_valid].astype(np.float64)


def _inputs_from_parquet(
    paths: Sequence[str | Path], schema: FeatureSchema, valid_fraction: float,
    max_valid_rows: int, seed: int,
) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    import dask.dataframe as dd

    names = list(schema.column_names)
    frame = dd.read_parquet([str(p) for p in paths], columns=[*names, "label", "customer_id"])
    held = frame.map_partitions(
        lambda part: part.assign(_valid=valid_mask(part["customer_id"].to_numpy(),
                                                   valid_fraction)))
    train = held[~held["_valid"]]
    # Dask frames straight in: X and y share the frame's partitions, as lightgbm.dask needs.
    x = train[names].astype("float32")
    y = train["label"].astype("float64")
    valid = held[held["_valid"]][[*names, "label"]].compute()
    if len(valid) > max_valid_rows:
        valid = valid.sample(n=max_valid_rows, random_state=seed)
    return (x, y, valid[names].to_numpy(np.float32),
            valid["label"].to_numpy(np.float64))


def _best_round(booster: lgb.Booster, x: np.ndarray, y: np.ndarray, patience: int) -> int:
    """The round with the lowest validation log loss, stopping after `patience` bad rounds."""
    rounds = booster.current_iteration()
    if not len(y) or rounds == 0:
        return rounds
    raw = np.zeros(len(y))
    best, best_loss, since = 0, math.inf, 0
    for i in range(rounds):
        raw += booster.predict(x, raw_score=True, start_iteration=i, num_iteration=1,
                               num_threads=2)
        loss = log_loss(y, 1.0 / (1.0 + np.exp(-raw)))
        if loss < best_loss - 1e-12:
            best, best_loss, since = i + 1, loss, 0
        else:
            since += 1
            if patience and since >= patience:
                break
    return max(best, 1)


def train_propensity_model_dask(
    schema: FeatureSchema,
    client: Any,
    *,
    dataset: Dataset | None = None,
    parquet: Sequence[str | Path] | None = None,
    params: dict[str, Any] | None = None,
    seed: int = 7,
    valid_fraction: float = 0.2,
    early_stopping_rounds: int = 30,
    num_boost_round: int = 300,
    threads_per_worker: int = 1,
    partitions: int | None = None,
    max_valid_rows: int = 200_000,
) -> TrainResult:
    """`DaskLGBMClassifier` over the cluster; the result is an ordinary `TrainResult`.

    LightGBM uses each worker's own thread count (`threads_per_worker` of the cluster);
    `threads_per_worker` here is only recorded in the params for the manifest.
    """
    from lightgbm.dask import DaskLGBMClassifier

    if (dataset is None) == (parquet is None):
        raise ValueError("pass exactly one of dataset= or parquet=")
    reserved = sorted(set(params or {}) & set(RESERVED_PARAMS))
    if reserved:
        raise ValueError(f"params {reserved} are set by the trainer itself")
    if dataset is not None and dataset.feature_names != schema.column_names:
        raise ValueError("dataset columns do not match the schema's column order")
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    started = time.monotonic()
    if dataset is not None:
        x, y, vx, vy = _inputs_from_dataset(dataset, client, valid_fraction,
                                            partitions or n_workers)
    else:
        x, y, vx, vy = _inputs_from_parquet(parquet or [], schema, valid_fraction,
                                            max_valid_rows, seed)
    names = list(schema.column_names)
    categorical = [schema.index(s.name) for s in schema.features if s.dtype is DType.CATEGORICAL]
    full: dict[str, Any] = {**DEFAULT_PARAMS, **(params or {}), **REPRODUCIBLE_PARAMS}
    model = DaskLGBMClassifier(
        client=client, objective="binary", n_estimators=num_boost_round, random_state=seed,
        verbosity=-1, **full,
    )
    logger.info("dask: training on %d workers (%d validation rows on the client)", n_workers,
                len(vy))
    model.fit(x, y, feature_name=names, categorical_feature=categorical)
    booster = model.booster_
    best = _best_round(booster, vx, vy, early_stopping_rounds)
    final = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    n_train = int(y.shape[0]) if hasattr(y, "chunks") else int(y.shape[0].compute())
    p = np.asarray(final.predict(vx, num_threads=2), np.float64) if len(vy) else np.empty(0)
    nan = float("nan")
    metrics: dict[str, float | int] = {
        "auc": auc(vy, p) if len(vy) else nan, "logloss": log_loss(vy, p) if len(vy) else nan,
        "base_rate": float(vy.mean()) if len(vy) else nan,
        "mean_prediction": float(p.mean()) if len(p) else nan,
        "n_train": n_train, "n_valid": len(vy), "best_iteration": int(best),
        "n_workers": n_workers,
    }
    logger.info("dask: validation auc=%.4f logloss=%.4f, %d trees, %.1fs", metrics["auc"],
                metrics["logloss"], best, time.monotonic() - started)
    return TrainResult(booster=final, metrics=metrics,
                       params={**full, "objective": "binary", "seed": seed,
                               "threads_per_worker": threads_per_worker})


def parquet_paths(source: str | Path) -> list[Path]:
    """The Parquet files of a file, a directory tree (e.g. an export's impressions/) or a glob."""
    p = Path(source)
    if p.is_file():
        return [p]
    if p.is_dir():
        root = p / "impressions" if (p / "impressions").is_dir() else p
        files = sorted(q for q in root.rglob("*.parquet") if not q.name.startswith("."))
    else:
        files = sorted(Path().glob(str(source)))
    if not files:
        raise FileNotFoundError(f"{source}: no Parquet files")
    return files


def run_training_parquet(
    cfg: TrainConfig, schema: FeatureSchema, catalog: Any, source: str | Path,
    out_dir: str | Path, overwrite: bool = False,
) -> tuple[TrainResult, Path]:
    """Train on Parquet files the workers read themselves, then export the artifact.

    Only the validation sample and the golden rows ever reach the client.
    """
    files = parquet_paths(source)
    t, d = cfg.training, cfg.dask
    with dask_client(d.scheduler, d.n_workers, d.threads_per_worker, d.processes) as client:
        result = train_propensity_model_dask(
            schema, client, parquet=[str(f) for f in files], params=dict(t.params),
            seed=cfg.seed, valid_fraction=t.valid_fraction,
            early_stopping_rounds=t.early_stopping_rounds, num_boost_round=t.num_boost_round,
            threads_per_worker=d.threads_per_worker,
        )
    head = Dataset.load(files[0], schema)
    last = Dataset.load(files[-1], schema).window[1] if len(files) > 1 else head.window[1]
    first = head.window[0]
    path = export_artifact(
        result.booster, schema, out_dir, name=cfg.name,
        golden_x=golden_inputs(schema, head.x, cfg.golden_rows, cfg.seed),
        metrics=result.metrics, training_window=(first, last),
        extra={"catalog_version": str(getattr(catalog, "version", "")),
               "logging_policy": head.logging_policy, "seed": cfg.seed,
               "trainer": "lightgbm.dask", "files": len(files)},
        overwrite=overwrite,
    )
    return result, path
