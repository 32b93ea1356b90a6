"""The coordinator of one decision: store -> features -> scoring -> engine -> response.

Transport-agnostic: the gRPC servicer (and later HTTP and batch) call `Decider.decide` with plain
types. Everything a request needs is read once at its start (catalog snapshot, model), so a hot
swap in the middle of a request cannot mix versions.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from features.encoding import RowEncoder
from features.schema import FeatureSchema
from nba_service.decide_support import (
    STORE_ERRORS,
    candidate_explanations,
    fallback_explanation,
    fallback_ranked_actions,
    fallback_ranking,
    ranked_actions,
    select_actions,
)
from nba_service.engine.arbitration import Engine
from nba_service.engine.catalog import Catalog
from nba_service.engine.explore import Selection
from nba_service.engine.fallback import FALLBACK_REASONS
from nba_service.engine.policies import PolicyTable
from nba_service.scoring.artifact import LoadedModel
from nba_service.scoring.registry import ModelHolder
from nba_service.scoring.router import ModelRouter
from nba_service.scoring.runner import ScoringRunner
from nba_service.store.online import CustomerSnapshot, OnlineStore
from nba_service.store.policies import PolicyRead
from nba_service.types import (
    Decision,
    DecisionRequest,
    DecisionTrace,
    Explanation,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogRuntime:
    """Everything derived from one catalog version; swapped as a whole on reload."""

    catalog: Catalog
    engine: Engine
    encoder: RowEncoder
    policies: PolicyTable

    @classmethod
    def build(cls, catalog: Catalog, schema: FeatureSchema) -> CatalogRuntime:
        engine = Engine(catalog, schema)
        encoder = RowEncoder(schema, [a.attributes() for a in catalog.actions])
        return cls(catalog=catalog, engine=engine, encoder=encoder,
                   policies=PolicyTable(catalog))


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
        rng: np.random.Generator | None = None,
        router: ModelRouter | None = None,
        scoring: ScoringRunner | None = None,
    ) -> None:
        self.schema = schema
        self.store = store
        self.catalogs = catalogs
        self.models = models
        # Champion/challenger routing, and where scores run (inline or a scoring thread).
        self.router = router if router is not None else ModelRouter(models)
        self.scoring = scoring if scoring is not None else ScoringRunner(threads=0)
        # Exploration's randomness; injectable so tests can replay a sequence of decisions.
        self.rng = rng if rng is not None else np.random.default_rng()
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
        route = self.router.route(req.customer_id)
        model = route.model
        candidates = rt.engine.candidates_for(req.channel, req.placement or None)
        now_ms = time.time_ns() // 1_000_000
        # Contact history and budget counters ride in the same pipelined round trip.
        policy_read = PolicyRead(rt.policies, candidates, req.channel, now_ms)
        try:
            snap = await self.store.fetch(req.customer_id, now_ms=now_ms,
                                          extra=policy_read.commands)
        except STORE_ERRORS as exc:
            log.warning("store unavailable, serving the fallback set: %r", exc)
            return self._fallback(rt, model, req, FALLBACK_REASONS["store"], [], t0)
        t1 = time.perf_counter_ns()
        degraded = _feature_reasons(snap)
        context = dict(req.context)
        context["channel"] = req.channel
        row = rt.encoder.customer_row(snap.batch, snap.realtime, context)
        if model is None:
            return self._fallback(rt, model, req, FALLBACK_REASONS["model"], degraded, t0,
                                  row)
        x = rt.encoder.encode(row, candidates, out=self._matrix(len(candidates)))
        t2 = time.perf_counter_ns()
        try:
            # An offloaded score returns its private copy of x: the shared buffer may be
            # refilled by another decision while this one awaits.
            propensity, x = await self.scoring.score(model, x)
            shadow = None
            if route.shadow is not None:
                shadow, x = await self.scoring.shadow(route.shadow, x, rt.catalog, candidates)
        except Exception:
            log.exception("model %s failed, serving the fallback set", model.version)
            return self._fallback(rt, model, req, FALLBACK_REASONS["model"], degraded, t0,
                                  row)
        model_version = model.version
        t3 = time.perf_counter_ns()
        policies = policy_read.evaluate(candidates, snap.history, snap.extra)
        ranking = rt.engine.rank(
            row, candidates, propensity, req.channel, context, req.limit,
            policy_block=policies.block, now_s=now_ms / 1000, lever_scale=policies.lever_scale,
        )
        selection = select_actions(rt, ranking, req, self.rng)
        ranking = selection.ranking  # served and stages as finally chosen
        actions = ranked_actions(rt, selection, req.channel)
        t4 = time.perf_counter_ns()
        explanation = None
        if req.explain:
            explanation = self._explain(rt, selection, x, model, policies.details)
        decision_id = new_decision_id()
        return Decision(
            decision_id=decision_id,
            actions=actions,
            model_version=model_version,
            catalog_version=rt.catalog.version,
            degraded_reasons=degraded,
            request_id=req.request_id,
            explanation=explanation,
            # References only: the decision log encodes them after the response is sent.
            trace=DecisionTrace(req.customer_id, req.channel, req.placement,
                                int(decision_id[:12], 16), row, ranking, rt),
            timing={
                "store": _us(t0, t1),
                "encode": _us(t1, t2),
                "score": _us(t2, t3),
                "rules": _us(t3, t4),
                "total": _us(t0, time.perf_counter_ns()),
            },
            explored=selection.explored,
            control_group=selection.control_group,
            shadow=shadow,
        )

    def _fallback(self, rt: CatalogRuntime, model: LoadedModel | None, req: DecisionRequest,
                  reason: str, degraded: list[str], t0: int,
                  row: np.ndarray | None = None) -> Decision:
        """The channel's fallback set, flagged degraded with `reason` (docs/catalog.md).

        It is logged like any decision (its outcomes must be accepted too): the customer row
        is the one encoded when the features were read, all NaN when they could not be.
        """
        actions = fallback_ranked_actions(rt, req)
        explanation = None
        if req.explain:
            explanation = Explanation(fallback_explanation(actions, reason), {})
        if row is None:
            row = np.full(len(self.schema.features), np.nan, dtype=np.float32)
        decision_id = new_decision_id()
        return Decision(
            decision_id=decision_id,
            actions=actions,
            model_version=model.version if model is not None else "",
            catalog_version=rt.catalog.version,
            degraded_reasons=[reason, *degraded],
            request_id=req.request_id,
            explanation=explanation,
            trace=DecisionTrace(req.customer_id, req.channel, req.placement,
                                int(decision_id[:12], 16), row, fallback_ranking(rt, actions),
                                rt),
            timing={"total": _us(t0, time.perf_counter_ns())},
        )

    def _explain(self, rt: CatalogRuntime, sel: Selection, x: np.ndarray,
                 model: object, policy_details: Mapping[int, str] | None = None) -> Explanation:
        r = sel.ranking
        candidates = candidate_explanations(rt, sel, policy_details)
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
    missing = getattr(snap, "batch_missing", ())
    if missing:
        reasons.append("missing_features:" + ",".join(missing))
    return reasons


class CatalogHolder:
    """Holds the current catalog runtime; replacing the reference is the atomic swap."""

    def __init__(self, current: CatalogRuntime) -> None:
        self.current = current
