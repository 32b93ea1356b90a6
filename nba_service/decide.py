"""The coordinator of one decision: store -> features -> scoring -> engine -> response.

Transport-agnostic: the gRPC servicer (and later HTTP and batch) call `Decider.decide` with plain
types. Everything a request needs is read once at its start (catalog snapshot, model), so a hot
swap in the middle of a request cannot mix versions.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from features.encoding import RowEncoder
from features.schema import FeatureSchema
from nba_service.engine.arbitration import Engine, Ranking
from nba_service.engine.catalog import Action, Catalog
from nba_service.scoring.registry import ModelHolder
from nba_service.store.online import CustomerSnapshot, OnlineStore
from nba_service.types import Decision, DecisionRequest, Explanation, RankedAction


@dataclass(frozen=True)
class CatalogRuntime:
    """Everything derived from one catalog version; swapped as a whole on reload."""

    catalog: Catalog
    engine: Engine
    encoder: RowEncoder

    @classmethod
    def build(cls, catalog: Catalog, schema: FeatureSchema) -> CatalogRuntime:
        engine = Engine(catalog, schema)
        encoder = RowEncoder(schema, [a.attributes() for a in catalog.actions])
        return cls(catalog=catalog, engine=engine, encoder=encoder)


def new_decision_id() -> str:
    """Time-ordered (ms prefix) so decision logs sort by time; 80 random bits avoid collisions."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def _us(t0: int, t1: int) -> int:
    return (t1 - t0) // 1000


TOP_CONTRIBUTIONS = 5


class Decider:
    def __init__(
        self,
        schema: FeatureSchema,
        store: OnlineStore,
        catalogs: CatalogHolder,
        models: ModelHolder,
    ) -> None:
        self.schema = schema
        self.store = store
        self.catalogs = catalogs
        self.models = models
        n_cols = len(schema.features)
        # One reusable input matrix: the event loop runs one decision's encode+score at a time
        # with no await in between, so sharing it is safe and saves an allocation per request.
        self._buf = np.empty((256, n_cols), dtype=np.float32)

    def _matrix(self, n: int) -> np.ndarray:
        if n > self._buf.shape[0]:
            self._buf = np.empty((n, self._buf.shape[1]), dtype=np.float32)
        return self._buf[:n]

    async def decide(self, req: DecisionRequest) -> Decision:
        t0 = time.perf_counter_ns()
        rt = self.catalogs.current
        model = self.models.model
        snap = await self.store.fetch(req.customer_id)
        t1 = time.perf_counter_ns()
        degraded = _feature_reasons(snap)
        context = dict(req.context)
        context["channel"] = req.channel
        row = rt.encoder.customer_row(snap.batch, snap.realtime, context)
        candidates = rt.engine.candidates_for(req.channel, req.placement or None)
        x = rt.encoder.encode(row, candidates, out=self._matrix(len(candidates)))
        t2 = time.perf_counter_ns()
        if model is None:
            degraded.append("model_unavailable")
            propensity = np.full(len(candidates), 0.5)
            model_version = ""
        else:
            propensity = model.scorer.predict(x)
            model_version = model.version
        t3 = time.perf_counter_ns()
        ranking = rt.engine.rank(
            row, candidates, propensity, req.channel, context, req.limit, now_s=time.time()
        )
        actions = self._ranked_actions(rt, ranking, req.channel)
        t4 = time.perf_counter_ns()
        explanation = None
        if req.explain:
            explanation = self._explain(rt, ranking, x, model)
        return Decision(
            decision_id=new_decision_id(),
            actions=actions,
            model_version=model_version,
            catalog_version=rt.catalog.version,
            degraded_reasons=degraded,
            request_id=req.request_id,
            explanation=explanation,
            timing={
                "store": _us(t0, t1),
                "encode": _us(t1, t2),
                "score": _us(t2, t3),
                "rules": _us(t3, t4),
                "total": _us(t0, time.perf_counter_ns()),
            },
        )

    def _ranked_actions(self, rt: CatalogRuntime, r: Ranking, channel: str) -> list[RankedAction]:
        out = []
        for rank, pos in enumerate(r.served, start=1):
            action: Action = rt.catalog.actions[int(r.candidates[pos])]
            out.append(
                RankedAction(
                    action_id=action.id,
                    action_type=action.type,
                    group=action.group,
                    rank=rank,
                    priority=float(r.priority[pos]),
                    propensity=float(r.propensity[pos]),
                    value=float(r.value[pos]),
                    context_weight=float(r.context_weight[pos]),
                    lever=float(r.lever[pos]),
                    treatment=action.treatment_for(channel),
                    reason_codes=r.reason_codes(pos),
                    # No exploration yet: the ranking is deterministic given the scores.
                    selection_probability=1.0,
                )
            )
        return out

    def _explain(self, rt: CatalogRuntime, r: Ranking, x: np.ndarray, model: object) -> Explanation:
        ranks = {int(pos): i + 1 for i, pos in enumerate(r.served)}
        candidates: list[dict[str, object]] = []
        for pos, idx in enumerate(r.candidates):
            removed = r.removed_by(pos)
            candidates.append(
                {
                    "action_id": rt.catalog.actions[int(idx)].id,
                    "removed_by": removed,
                    "propensity": float(r.propensity[pos]),
                    "context_weight": float(r.context_weight[pos]),
                    "value": float(r.value[pos]),
                    "lever": float(r.lever[pos]),
                    "priority": float(r.priority[pos]),
                    "rank": ranks.get(pos, 0),
                }
            )
        contributions: dict[str, list[tuple[str, float]]] = {}
        scorer = getattr(model, "scorer", None)
        if scorer is not None and len(r.served) and hasattr(scorer, "contributions"):
            served = np.asarray(r.served, dtype=np.int64)
            contrib = scorer.contributions(np.ascontiguousarray(x[served]))
            names = self.schema.column_names
            for row, pos in zip(contrib, served, strict=True):
                order = np.argsort(-np.abs(row[:-1]))[:TOP_CONTRIBUTIONS]
                aid = rt.catalog.actions[int(r.candidates[pos])].id
                contributions[aid] = [(names[j], float(row[j])) for j in order]
        return Explanation(candidates=candidates, contributions=contributions)


def _feature_reasons(snap: CustomerSnapshot) -> list[str]:
    reasons: list[str] = []
    if not snap.found:
        reasons.append("cold_start:unknown_customer")
    reasons.extend(f"feature_problem:{p}" for p in getattr(snap, "problems", ()))
    if snap.stale:
        reasons.append("stale_features:" + ",".join(snap.stale))
    return reasons


class CatalogHolder:
    """Holds the current catalog runtime; replacing the reference is the atomic swap."""

    def __init__(self, current: CatalogRuntime) -> None:
        self.current = current
