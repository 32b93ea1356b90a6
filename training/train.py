"""Train the propensity model: LightGBM binary classifier over the encoded impression rows."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from features.schema import DType, FeatureSchema
from training.config import REPRODUCIBLE_PARAMS, RESERVED_PARAMS, TrainConfig
from training.dataset import Dataset, simulate_impressions
from training.export import export_artifact, golden_inputs
from training.simulate import Simulator

__all__ = [
    "DEFAULT_PARAMS",
    "TrainResult",
    "auc",
    "log_loss",
    "run_training",
    "split_by_customer",
    "train_demo_model",
    "train_propensity_model",
]

logger = logging.getLogger("nba.training")

DEFAULT_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.9,
    "lambda_l2": 1.0,
    "max_cat_to_onehot": 8,
    "cat_smooth": 10.0,
}
DEMO_CHANNELS = ("WEB", "MOBILE_APP", "CALL_CENTRE", "CHAT", "EMAIL", "BRANCH")


@dataclass
class TrainResult:
    booster: lgb.Booster
    metrics: dict[str, float | int]
    params: dict[str, Any] = field(default_factory=dict)
    valid_rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.intp))


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula, ties counted as half; NaN if one class is absent."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    sorted_p = np.asarray(p)[order]
    ranks = np.empty(len(p), dtype=np.float64)
    # Average rank within each run of equal scores.
    _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(y: np.ndarray, p: np.ndarray, eps: float = 1e-15) -> float:
    q = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    t = np.asarray(y, dtype=np.float64)
    return float(-np.mean(t * np.log(q) + (1 - t) * np.log(1 - q)))


def split_by_customer(
    dataset: Dataset, valid_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, valid); a customer's rows all land on one side, so validation
    measures generalisation to new customers rather than memory of known ones."""
    customers = np.unique(dataset.customer_id.astype(str))
    rng = np.random.default_rng([seed, 9])
    n_valid = max(1, round(len(customers) * valid_fraction)) if len(customers) > 1 else 0
    held = set(rng.choice(customers, size=n_valid, replace=False).tolist())
    is_valid = np.array([c in held for c in dataset.customer_id.astype(str)], dtype=bool)
    return np.flatnonzero(~is_valid), np.flatnonzero(is_valid)


def _progress(period: int) -> Callable[[Any], None]:
    start = time.monotonic()

    def callback(env: Any) -> None:
        done = env.iteration + 1
        if period and (done % period == 0 or done == env.end_iteration):
            scores = ", ".join(f"{data} {name}={value:.5f}"
                               for data, name, value, _ in env.evaluation_result_list)
            logger.info("round %d/%d  %s  (%.1fs)", done, env.end_iteration, scores,
                        time.monotonic() - start)

    callback.order = 30  # type: ignore[attr-defined]
    return callback


def train_propensity_model(
    dataset: Dataset,
    schema: FeatureSchema,
    params: Mapping[str, Any] | None = None,
    seed: int = 7,
    valid_fraction: float = 0.2,
    early_stopping_rounds: int = 30,
    num_boost_round: int = 300,
    *,
    num_threads: int = 2,
    class_imbalance: str = "none",
    scale_pos_weight: float | None = None,
    log_every: int = 25,
) -> TrainResult:
    """Fit a deterministic LightGBM binary model; metrics are measured on held-out customers.

    The same dataset, params and seed give a byte-identical model text: `deterministic`,
    `force_row_wise`, the seed and the thread count are always set here.
    """
    if dataset.feature_names != schema.column_names:
        raise ValueError("dataset columns do not match the schema's column order")
    reserved = sorted(set(params or {}) & set(RESERVED_PARAMS))
    if reserved:
        raise ValueError(f"params {reserved} are set by train_propensity_model itself")
    train_rows, valid_rows = split_by_customer(dataset, valid_fraction, seed)
    y_train = dataset.y[train_rows].astype(np.float64)
    n_pos = int(y_train.sum())
    if n_pos == 0 or n_pos == len(train_rows):
        raise ValueError(f"training split has {n_pos} positives in {len(train_rows)} rows: "
                         "need both outcomes")
    full: dict[str, Any] = {
        **DEFAULT_PARAMS, **(params or {}), **REPRODUCIBLE_PARAMS,
        "objective": "binary", "metric": ["auc", "binary_logloss"], "seed": seed,
        "num_threads": num_threads, "verbosity": -1,
    }
    if class_imbalance == "is_unbalance":
        full["is_unbalance"] = True
    elif class_imbalance == "scale_pos_weight":
        full["scale_pos_weight"] = scale_pos_weight or (len(train_rows) - n_pos) / n_pos
    elif class_imbalance != "none":
        raise ValueError(f"class_imbalance {class_imbalance!r}: use none, is_unbalance or "
                         "scale_pos_weight")
    names = list(schema.column_names)
    categorical = [s.name for s in schema.features if s.dtype is DType.CATEGORICAL]
    train_set = lgb.Dataset(dataset.x[train_rows], label=y_train, feature_name=names,
                            categorical_feature=categorical, free_raw_data=True,
                            params={"verbosity": -1})
    callbacks = [_progress(log_every)]
    valid_sets = [train_set]
    valid_names = ["train"]
    if len(valid_rows):
        valid_set = lgb.Dataset(dataset.x[valid_rows],
                                label=dataset.y[valid_rows].astype(np.float64),
                                reference=train_set, free_raw_data=True)
        valid_sets, valid_names = [valid_set], ["valid"]
        if early_stopping_rounds:
            callbacks.append(lgb.early_stopping(early_stopping_rounds, verbose=False))
    logger.info("training on %d rows (%d positives), validating on %d rows",
                len(train_rows), n_pos, len(valid_rows))
    booster = lgb.train(full, train_set, num_boost_round=num_boost_round,
                        valid_sets=valid_sets, valid_names=valid_names, callbacks=callbacks)
    best = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
    # Round-trip through the text format so the returned booster is exactly what gets saved
    # (only the trees up to the best iteration).
    final = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    eval_rows = valid_rows if len(valid_rows) else train_rows
    p = np.asarray(final.predict(dataset.x[eval_rows], num_threads=num_threads), np.float64)
    y_eval = dataset.y[eval_rows]
    metrics: dict[str, float | int] = {
        "auc": auc(y_eval, p), "logloss": log_loss(y_eval, p),
        "base_rate": float(y_eval.mean()) if len(y_eval) else float("nan"),
        "mean_prediction": float(p.mean()) if len(p) else float("nan"),
        "n_train": len(train_rows), "n_valid": len(valid_rows), "best_iteration": int(best),
    }
    logger.info("validation auc=%.4f logloss=%.4f (base rate %.4f, %d trees)",
                metrics["auc"], metrics["logloss"], metrics["base_rate"], best)
    return TrainResult(booster=final, metrics=metrics, params=full, valid_rows=valid_rows)


def build_dataset(cfg: TrainConfig, schema: FeatureSchema, catalog: Any) -> Dataset:
    """The config's dataset file, or a simulated one."""
    if cfg.dataset is not None:
        return Dataset.load(cfg.dataset, schema)
    sim_cfg = cfg.simulation
    sim = Simulator(schema, catalog, seed=cfg.seed if sim_cfg.seed is None else sim_cfg.seed)
    return simulate_impressions(
        sim, sim_cfg.customers, sim_cfg.impressions_per_customer, sim_cfg.channels,
        logging_policy=sim_cfg.logging_policy, seed=cfg.seed, epsilon=sim_cfg.epsilon,
        start=sim_cfg.start, days=sim_cfg.days,
    )


def run_training(
    cfg: TrainConfig, schema: FeatureSchema, catalog: Any, out_dir: str | Path,
    dataset: Dataset | None = None, created_at: datetime | None = None,
    overwrite: bool = False,
) -> tuple[TrainResult, Path]:
    """Dataset -> model -> verified artifact in `out_dir`."""
    data = dataset if dataset is not None else build_dataset(cfg, schema, catalog)
    t = cfg.training
    if cfg.dask.enabled:
        result = _train_dask(cfg, schema, data)
    else:
        result = train_propensity_model(
            data, schema, params=t.params, seed=cfg.seed, valid_fraction=t.valid_fraction,
            early_stopping_rounds=t.early_stopping_rounds, num_boost_round=t.num_boost_round,
            num_threads=t.num_threads, class_imbalance=t.class_imbalance,
            scale_pos_weight=t.scale_pos_weight, log_every=t.log_every,
        )
    golden = golden_inputs(schema, data.x, cfg.golden_rows, cfg.seed)
    path = export_artifact(
        result.booster, schema, out_dir, name=cfg.name, golden_x=golden,
        metrics=result.metrics, training_window=data.window, created_at=created_at,
        extra={"catalog_version": str(getattr(catalog, "version", "")),
               "logging_policy": data.logging_policy, "seed": cfg.seed},
        overwrite=overwrite,
    )
    return result, path


def _train_dask(cfg: TrainConfig, schema: FeatureSchema, data: Dataset) -> TrainResult:
    from training.dask_train import dask_client, train_propensity_model_dask

    t, d = cfg.training, cfg.dask
    if t.class_imbalance != "none":
        raise ValueError("training.class_imbalance is not supported with dask.enabled")
    with dask_client(d.scheduler, d.n_workers, d.threads_per_worker, d.processes) as client:
        return train_propensity_model_dask(
            schema, client, dataset=data, params=dict(t.params), seed=cfg.seed,
            valid_fraction=t.valid_fraction, early_stopping_rounds=t.early_stopping_rounds,
            num_boost_round=t.num_boost_round, threads_per_worker=d.threads_per_worker,
            partitions=d.partitions,
        )


def train_demo_model(
    schema: FeatureSchema, catalog: Any, out_dir: str | Path, n_customers: int = 2000,
    seed: int = 7,
) -> Path:
    """A small but real propensity model for `nba demo` (about 2 s on two cores).

    `out_dir` is replaced if it exists. Returns the artifact directory.
    """
    cfg = TrainConfig.model_validate({
        "name": "demo-propensity", "schema": "features.yaml", "catalog": "catalog.yaml",
        "seed": seed,
        "simulation": {"customers": n_customers, "impressions_per_customer": 6,
                       "channels": list(DEMO_CHANNELS)},
        "training": {"num_boost_round": 120, "early_stopping_rounds": 20, "log_every": 0,
                     "params": {"learning_rate": 0.1, "num_leaves": 15}},
    })
    _, path = run_training(cfg, schema, catalog, out_dir, overwrite=True)
    return path
