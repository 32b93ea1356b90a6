"""The parts of a decision around the kernel: exploration, fallback answers, explanations.

Kept apart from `decide.py` so the coordinator stays a readable sequence of steps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from redis.exceptions import RedisError

from nba_service.engine.arbitration import Ranking
from nba_service.engine.explore import Selection, in_control_group, select
from nba_service.engine.fallback import fallback_actions
from nba_service.types import DecisionRequest, RankedAction

if TYPE_CHECKING:
    from nba_service.decide import CatalogRuntime

__all__ = [
    "STORE_ERRORS",
    "candidate_explanations",
    "fallback_explanation",
    "fallback_ranked_actions",
    "fallback_ranking",
    "ranked_actions",
    "select_actions",
]

# What a store that is down, unreachable or too slow raises (redis-py wraps socket errors in
# ConnectionError/TimeoutError, but a few paths surface the OSError itself).
STORE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)


def select_actions(rt: CatalogRuntime, ranking: Ranking, req: DecisionRequest,
                   rng: np.random.Generator, now_s: float | None = None) -> Selection:
    """Exploration and control group for this request's channel/placement (docs/catalog.md)."""
    cfg = rt.catalog.exploration
    policy = cfg.policy_for(req.channel, req.placement or None)
    now = time.time() if now_s is None else now_s
    control = cfg.control.treatment \
        if in_control_group(cfg, policy, req.customer_id, now) else None
    eng = rt.engine
    return select(ranking, req.limit, policy, action_groups=eng.action_groups,
                  n_groups=eng.n_groups, max_per_group=eng.max_per_group, rng=rng,
                  control=control)


def ranked_actions(rt: CatalogRuntime, sel: Selection, channel: str) -> list[RankedAction]:
    r = sel.ranking
    actions = rt.catalog.actions
    out = []
    for j, pos in enumerate(r.served):
        action = actions[int(r.candidates[pos])]
        out.append(RankedAction(
            action_id=action.id,
            action_type=action.type,
            group=action.group,
            rank=j + 1,
            priority=float(r.priority[pos]),
            propensity=float(r.propensity[pos]),
            value=float(r.value[pos]),
            context_weight=float(r.context_weight[pos]),
            lever=float(r.lever[pos]),
            treatment=action.treatment_for(channel),
            reason_codes=sel.reason_codes(j),
            selection_probability=float(sel.probability[j]),
        ))
    return out


def fallback_ranked_actions(rt: CatalogRuntime, req: DecisionRequest) -> list[RankedAction]:
    """The channel's fallback set: no rules, no model, cap-exempt, served in declared order."""
    out = []
    for rank, idx in enumerate(
        fallback_actions(rt.catalog, req.channel, req.placement, req.limit), start=1
    ):
        action = rt.catalog.actions[idx]
        value = action.value if action.value is not None else 0.0
        out.append(RankedAction(
            action_id=action.id,
            action_type=action.type,
            group=action.group,
            rank=rank,
            priority=0.0,  # nothing was scored
            propensity=0.0,
            value=value,
            context_weight=1.0,
            lever=action.lever,
            treatment=action.treatment_for(req.channel),
            reason_codes=["FALLBACK"],
            selection_probability=1.0,
        ))
    return out


def fallback_ranking(rt: CatalogRuntime, actions: list[RankedAction]) -> Ranking:
    """The per-candidate arrays of a fallback answer, for its decision log entry: the served
    fallbacks are its only candidates, unscored, each chosen with probability 1."""
    idx = np.array([rt.catalog.index_of(a.action_id) for a in actions], dtype=np.int64)
    k = len(idx)
    return Ranking(
        candidates=idx, served=np.arange(k, dtype=np.int64), served_actions=idx,
        priority=np.zeros(k), propensity=np.zeros(k), context_weight=np.ones(k),
        value=np.array([a.value for a in actions], dtype=np.float64),
        lever=np.array([a.lever for a in actions], dtype=np.float64),
        removed_stage=np.zeros(k, dtype=np.int32), mandatory=np.zeros(k, dtype=np.bool_),
    )


def fallback_explanation(actions: list[RankedAction], reason: str) -> list[dict[str, object]]:
    """Explanation rows of a fallback answer: only the served fallbacks, with the cause."""
    return [
        {"action_id": a.action_id, "removed_by": "", "detail": f"served as {reason}",
         "propensity": 0.0, "context_weight": 1.0, "value": a.value, "lever": a.lever,
         "priority": 0.0, "rank": a.rank}
        for a in actions
    ]


def candidate_explanations(rt: CatalogRuntime, sel: Selection,
                           policy_details: Mapping[int, str] | None = None
                           ) -> list[dict[str, object]]:
    """Every candidate with the stage that removed it (and why), or its rank; P, C, V, L always.

    `policy_details` (candidate position -> text) lets the caller say exactly which contact
    policy or budget removed a candidate; without it the action's configured limits are shown.
    """
    r = sel.ranking
    ranks = {int(pos): j for j, pos in enumerate(r.served)}
    out: list[dict[str, object]] = []
    for pos, idx in enumerate(r.candidates):
        j = ranks.get(pos)
        if j is not None:
            detail = _served_detail(sel, j)
        elif policy_details and pos in policy_details:
            detail = policy_details[pos]
        else:
            detail = rt.engine.detail(r, pos)
        out.append({
            "action_id": rt.catalog.actions[int(idx)].id,
            "removed_by": r.removed_by(pos),
            "detail": detail,
            "propensity": float(r.propensity[pos]),
            "context_weight": float(r.context_weight[pos]),
            "value": float(r.value[pos]),
            "lever": float(r.lever[pos]),
            "priority": float(r.priority[pos]),
            "rank": 0 if j is None else j + 1,
        })
    return out


def _served_detail(sel: Selection, j: int) -> str:
    pos = int(sel.ranking.served[j])
    p = float(sel.probability[j])
    if sel.ranking.mandatory[pos]:
        how = "mandatory, served before arbitration"
    elif sel.control_group:
        how = "random pick for the control group"
    elif sel.explored_slots[j]:
        how = f"explored ({sel.method.value})"
    else:
        how = "highest priority" if sel.method.value == "greedy" \
            else f"highest priority under {sel.method.value}"
    return f"{how}; selection probability {p:.4g}"

