"""Train a reward model on a logged-bandit-feedback table and evaluate a new policy offline.

The reward model is LightGBM over the context columns plus the action (categorical); binary
rewards get a `binary` objective, others `regression`. Rows are split at random, seeded: the
model trains on one part, and the policy is evaluated on the other, so the doubly robust
estimator never sees a reward model fitted on the rows it corrects (cross-fitting by holdout).
The new policy serves, per context, the action with the highest predicted reward.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

from training.bandit_dataset import BanditTable
from training.evaluate import Evaluation, action_shares, model_metrics
from training.ope import evaluate_policy, greedy_policy

__all__ = ["BanditModel", "evaluate_bandit_table", "fit_reward_model", "predict_all_actions"]

logger = logging.getLogger("nba.training")


@dataclass
class BanditModel:
    booster: lgb.Booster
    feature_names: list[str]  # context features, then "action"
    binary: bool
    n_actions: int


def _matrix(table: BanditTable, action: np.ndarray) -> np.ndarray:
    return np.hstack([table.x, action.astype(np.float32)[:, None]])


def fit_reward_model(
    table: BanditTable, *, seed: int = 7, num_boost_round: int = 300,
    early_stopping_rounds: int = 30, valid_fraction: float = 0.2, num_threads: int = 2,
    params: dict[str, Any] | None = None,
) -> BanditModel:
    """Deterministic LightGBM reward model (early stopping on a seeded random holdout)."""
    names = [*table.feature_names, "action"]
    if "action" in table.feature_names:
        raise ValueError("a context column is named 'action'; rename it or pass --features")
    binary = table.binary_reward
    full: dict[str, Any] = {
        "objective": "binary" if binary else "regression", "learning_rate": 0.05,
        "num_leaves": 31, "min_data_in_leaf": 40, "lambda_l2": 1.0, **(params or {}),
        "seed": seed, "deterministic": True, "force_row_wise": True,
        "num_threads": num_threads, "verbosity": -1,
    }
    rng = np.random.default_rng([seed, 31])
    is_valid = rng.random(len(table)) < valid_fraction
    x = _matrix(table, table.action)
    cats = [*table.categorical, "action"]
    train = lgb.Dataset(x[~is_valid], label=table.reward[~is_valid], feature_name=names,
                        categorical_feature=cats, params={"verbosity": -1})
    callbacks: list[Any] = []
    valid_sets = [train]
    if is_valid.any() and early_stopping_rounds:
        valid_sets = [lgb.Dataset(x[is_valid], label=table.reward[is_valid], reference=train)]
        callbacks.append(lgb.early_stopping(early_stopping_rounds, verbose=False))
    booster = lgb.train(full, train, num_boost_round=num_boost_round, valid_sets=valid_sets,
                        callbacks=callbacks)
    best = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
    final = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    logger.info("reward model: %d trees on %d rows", best, int((~is_valid).sum()))
    return BanditModel(booster=final, feature_names=names, binary=binary,
                       n_actions=len(table.action_ids))


def predict_all_actions(model: BanditModel, table: BanditTable, num_threads: int = 2
                        ) -> np.ndarray:
    """(n, A) predicted reward of every action in every logged context."""
    n, a = len(table), model.n_actions
    out = np.empty((n, a))
    for k in range(a):
        out[:, k] = model.booster.predict(_matrix(table, np.full(n, k)), num_threads=num_threads)
    return out


def evaluate_bandit_table(
    table: BanditTable, *, seed: int = 7, eval_fraction: float = 0.5, n_bootstrap: int = 400,
    confidence: float = 0.95, params: dict[str, Any] | None = None,
) -> tuple[Evaluation, BanditModel, np.ndarray]:
    """Fit on one part, evaluate the greedy policy on the other.

    Returns the evaluation, the model and the evaluation rows (indices into `table`).
    """
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction {eval_fraction} must be in (0, 1)")
    rng = np.random.default_rng([seed, 37])
    is_eval = rng.random(len(table)) < eval_fraction
    if is_eval.sum() < 10 or (~is_eval).sum() < 10:
        raise ValueError(f"{len(table)} rows are too few to split for training and evaluation")
    model = fit_reward_model(table.subset(np.flatnonzero(~is_eval)), seed=seed, params=params)
    rows = np.flatnonzero(is_eval)
    held = table.subset(rows)
    q_hat = predict_all_actions(model, held)
    logged_pred = q_hat[np.arange(len(held)), held.action]
    y = held.reward if model.binary else (held.reward > 0).astype(np.float64)
    metrics = model_metrics(y, logged_pred)
    pi = greedy_policy(q_hat)
    ope = evaluate_policy(held.reward, held.action, held.propensity, pi, q_hat,
                          n_bootstrap=n_bootstrap, seed=seed, confidence=confidence)
    ids = held.action_ids
    evaluation = Evaluation(
        metrics=metrics, ope=ope, policy="greedy", n_rows=len(held), dropped_rows=0,
        served_share=action_shares(pi.sum(axis=0), ids),
        logged_share=action_shares(np.bincount(held.action, minlength=len(ids)).astype(float), ids),
        weights=pi[np.arange(len(held)), held.action] / held.propensity,
        pscore=held.propensity, pi=pi, rows=rows,
    )
    return evaluation, model, rows
