"""Evaluate a propensity model on logged impressions: model metrics and off-policy evaluation.

Model metrics (on rows the model did not train on): AUC, log loss, the calibration curve, and
gain / lift by score decile.

Policy evaluation: for every logged context the model scores every candidate action of the
row's channel (the logged row with its ACTION columns swapped, exactly as the service builds
its matrix), and the decision engine ranks them with the catalog's rules and arbitration
(`priority = P x C x V x L`); the new policy serves the engine's first action. The reward of a
logged row is `label x value` of the served action, so policy values are expected business
value per decision. The reward model for DM / DR is `model propensity x value`. Contact
policies, budgets and exploration depend on live state and are not replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from features.encoding import RowEncoder
from features.schema import FeatureSchema, Source
from nba_service.engine.arbitration import Engine
from nba_service.engine.catalog import Catalog
from nba_service.engine.reasons import ARBITRATION_STAGES, Stage
from training.dataset import Dataset
from training.ope import OPEResult, evaluate_policy, greedy_policy
from training.train import auc, log_loss

__all__ = [
    "CandidateScores",
    "Evaluation",
    "ModelMetrics",
    "calibration_curve",
    "evaluate_model",
    "gain_curve",
    "model_metrics",
    "score_candidates",
]

logger = logging.getLogger("nba.training")
Predict = Callable[[np.ndarray], np.ndarray]
POLICIES = ("engine", "greedy")
_CHUNK_ROWS = 2048


@dataclass
class ModelMetrics:
    auc: float
    logloss: float
    base_rate: float
    mean_prediction: float
    n: int
    calibration: dict[str, list[float]]  # bin mean prediction, observed rate, count
    gain: dict[str, list[float]]  # population share, share of positives captured
    lift: dict[str, list[float]]  # decile (1 = highest scores), lift over the base rate

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class CandidateScores:
    """Per logged row x catalog action: model propensity, business value, and masks."""

    offered: np.ndarray  # bool (n, A): offered on the row's channel
    eligible: np.ndarray  # bool (n, A): passes the catalog's rules
    propensity: np.ndarray  # float64 (n, A), NaN where not offered
    value: np.ndarray  # float64 (n, A), 0 where unknown
    engine_choice: np.ndarray  # intp (n,), catalog index the engine serves first, -1 = none


@dataclass
class Evaluation:
    metrics: ModelMetrics
    ope: OPEResult | None
    policy: str
    n_rows: int
    dropped_rows: int
    served_share: dict[str, float] = field(default_factory=dict)  # new policy's action mix
    logged_share: dict[str, float] = field(default_factory=dict)
    weights: np.ndarray = field(default_factory=lambda: np.empty(0))
    pscore: np.ndarray = field(default_factory=lambda: np.empty(0))
    scores: CandidateScores | None = None  # of the OPE rows (`rows`)
    pi: np.ndarray | None = None  # the new policy on the OPE rows
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.intp))

    def to_dict(self) -> dict[str, object]:
        return {
            "metrics": self.metrics.to_dict(),
            "ope": None if self.ope is None else self.ope.to_dict(),
            "policy": self.policy, "n_rows": self.n_rows, "dropped_rows": self.dropped_rows,
            "served_share": self.served_share, "logged_share": self.logged_share,
        }


def calibration_curve(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """Quantile bins of the prediction: mean prediction vs observed positive rate per bin."""
    order = np.argsort(p, kind="mergesort")
    parts = [part for part in np.array_split(order, min(bins, max(len(p), 1))) if len(part)]
    return {
        "mean_prediction": [float(p[s].mean()) for s in parts],
        "observed_rate": [float(np.asarray(y)[s].mean()) for s in parts],
        "count": [float(len(s)) for s in parts],
    }


def gain_curve(y: np.ndarray, p: np.ndarray, points: int = 50) -> tuple[
    dict[str, list[float]], dict[str, list[float]]
]:
    """Cumulative gain (share of positives in the top share of scores) and lift per decile."""
    yy = np.asarray(y, dtype=np.float64)[np.argsort(-np.asarray(p), kind="mergesort")]
    n, pos = len(yy), float(yy.sum())
    cum = np.concatenate([[0.0], np.cumsum(yy)])
    at = np.unique(np.linspace(0, n, points + 1).round().astype(int))
    gain = {"population": [float(i / n) if n else 0.0 for i in at],
            "captured": [float(cum[i] / pos) if pos else 0.0 for i in at]}
    base = pos / n if n else 0.0
    deciles = [d for d in np.array_split(yy, 10) if len(d)]
    lift = {"decile": [float(i + 1) for i in range(len(deciles))],
            "lift": [float(d.mean() / base) if base else 0.0 for d in deciles]}
    return gain, lift


def model_metrics(y: np.ndarray, p: np.ndarray) -> ModelMetrics:
    gain, lift = gain_curve(y, p)
    return ModelMetrics(
        auc=auc(y, p), logloss=log_loss(y, p), base_rate=float(np.mean(y)) if len(y) else 0.0,
        mean_prediction=float(np.mean(p)) if len(p) else 0.0, n=len(y),
        calibration=calibration_curve(y, p), gain=gain, lift=lift,
    )


def _catalog_index(data: Dataset, catalog: Catalog) -> np.ndarray:
    """Dataset action index -> catalog index (-1 for actions the catalog no longer has)."""
    ids = {a.id: i for i, a in enumerate(catalog.actions)}
    table = np.array([ids.get(a, -1) for a in data.action_ids], dtype=np.intp)
    return table[data.action_idx] if len(data) else np.empty(0, np.intp)


def score_candidates(
    data: Dataset, predict: Predict, schema: FeatureSchema, catalog: Catalog,
    engine: Engine | None = None,
) -> CandidateScores:
    """Score every candidate of every logged row and rank them with the engine."""
    engine = engine or Engine(catalog, schema)
    encoder = RowEncoder(schema, [a.attributes() for a in catalog.actions])
    action_cols = np.asarray(schema.columns_of(Source.ACTION), dtype=np.intp)
    block = encoder.action_block  # (A, n_action_cols)
    n, n_actions = len(data), len(catalog.actions)
    offered = np.zeros((n, n_actions), dtype=bool)
    eligible = np.zeros((n, n_actions), dtype=bool)
    prop = np.full((n, n_actions), np.nan)
    value = np.zeros((n, n_actions))
    choice = np.full(n, -1, dtype=np.intp)
    for chan in np.unique(data.channel.astype(str)):
        rows = np.flatnonzero(data.channel == chan)
        try:
            cands = engine.candidates_for(chan)
        except ValueError:
            logger.warning("channel %r is unknown to the catalog: %d rows skipped", chan,
                           len(rows))
            continue
        if not len(cands):
            continue
        offered[np.ix_(rows, cands)] = True
        for start in range(0, len(rows), _CHUNK_ROWS):
            part = rows[start:start + _CHUNK_ROWS]
            x = np.repeat(data.x[part], len(cands), axis=0)
            x[:, action_cols] = np.tile(block[cands], (len(part), 1))
            prop[np.ix_(part, cands)] = np.asarray(predict(x), np.float64).reshape(
                len(part), len(cands))
        customer = data.x[rows].copy()
        customer[:, action_cols] = np.nan
        for k, i in enumerate(rows):
            ranking = engine.rank(customer[k], cands, prop[i, cands], chan, {}, 1)
            value[i, cands] = np.nan_to_num(ranking.value, nan=0.0)
            stage = ranking.removed_stage
            eligible[i, cands] = np.isin(stage, _PASSED)
            if len(ranking.served_actions):
                choice[i] = int(ranking.served_actions[0])
    return CandidateScores(offered=offered, eligible=eligible, propensity=prop, value=value,
                           engine_choice=choice)


# Candidates that passed every filter; the others were removed by a rule or policy.
_PASSED = np.array(sorted({int(Stage.SERVED), *(int(s) for s in ARBITRATION_STAGES)}))


def target_policy(scores: CandidateScores, policy: str = "engine") -> np.ndarray:
    """(n, A) probabilities of the new policy: the engine's choice, or greedy P x V."""
    if policy == "engine":
        pi = np.zeros_like(scores.propensity)
        has = scores.engine_choice >= 0
        pi[np.flatnonzero(has), scores.engine_choice[has]] = 1.0
        return pi
    if policy == "greedy":
        return greedy_policy(scores.propensity * scores.value, scores.offered & scores.eligible)
    raise ValueError(f"policy {policy!r}: use one of {POLICIES}")


def evaluate_model(
    data: Dataset, predict: Predict, schema: FeatureSchema, catalog: Catalog, *,
    policy: str = "engine", n_bootstrap: int = 400, seed: int = 0, confidence: float = 0.95,
    engine: Engine | None = None,
) -> Evaluation:
    """Model metrics on `data` plus OPE of the engine-with-this-model policy against the
    logging policy that produced `data` (rows need `propensity_logged` in (0, 1])."""
    if len(data) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    p_logged = np.asarray(predict(data.x), np.float64)
    metrics = model_metrics(data.y, p_logged)
    cat_idx = _catalog_index(data, catalog)
    usable = (cat_idx >= 0) & np.isfinite(data.propensity_logged) \
        & (data.propensity_logged > 0) & (data.propensity_logged <= 1)
    dropped = int((~usable).sum())
    if dropped:
        logger.warning("%d of %d rows have no usable logged propensity or an action the "
                       "catalog lacks; OPE uses the rest", dropped, len(data))
    ope: OPEResult | None = None
    served: dict[str, float] = {}
    logged: dict[str, float] = {}
    weights = pscore = np.empty(0)
    scores = pi = None
    kept = np.flatnonzero(usable)
    if len(kept):
        sub = data.subset(kept)
        a = cat_idx[usable]
        scores = score_candidates(sub, predict, schema, catalog, engine)
        pi = target_policy(scores, policy)
        rows = np.arange(len(sub))
        reward = sub.y.astype(np.float64) * scores.value[rows, a]
        q_hat = np.nan_to_num(scores.propensity, nan=0.0) * scores.value
        ope = evaluate_policy(reward, a, sub.propensity_logged, pi, q_hat,
                              n_bootstrap=n_bootstrap, seed=seed, confidence=confidence)
        ids = [act.id for act in catalog.actions]
        served = action_shares(pi.sum(axis=0), ids)
        logged = action_shares(np.bincount(a, minlength=len(ids)).astype(np.float64), ids)
        pscore = sub.propensity_logged
        weights = pi[rows, a] / pscore
    return Evaluation(metrics=metrics, ope=ope, policy=policy, n_rows=len(data),
                      dropped_rows=dropped, served_share=served, logged_share=logged,
                      weights=weights, pscore=pscore, scores=scores, pi=pi, rows=kept)


def action_shares(counts: np.ndarray, ids: list[str]) -> dict[str, float]:
    total = float(counts.sum())
    if total <= 0:
        return {}
    order = np.argsort(-counts, kind="mergesort")
    return {ids[i]: float(counts[i] / total) for i in order if counts[i] > 0}


def booster_predict(booster: Any, num_threads: int = 2) -> Predict:
    """A `predict` callable over a LightGBM booster."""
    return lambda x: np.asarray(booster.predict(x, num_threads=num_threads), np.float64)
