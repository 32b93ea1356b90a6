"""Exploration and the random control group, applied to the ranking of one request.

The decision kernel computes P, C, V, L and the greedy top-k; `Explorer.select` then decides
which eligible actions are actually served: the greedy ones (no exploration), a slot-wise
epsilon-greedy slate, a Thompson-sampled slate, or, for a control-group customer, a uniformly
random slate (or none). Every served action gets its selection probability:

    selection_probability[j] = P(action at rank j | the actions at ranks 1..j-1, candidates)

so the product over the ranks is the probability of the served slate, and rank 1's value is
its marginal probability: what off-policy evaluation (IPS, DR) needs. It is exact for greedy,
epsilon-greedy and the control group, and a Monte Carlo estimate for Thompson sampling
(docs/catalog.md gives the estimator and its error). Mandatory actions are served first with
probability 1 and are never explored.

Pure: no I/O; the random generator is passed in, so tests can seed it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from nba_service.engine import explore_kernels as kernels
from nba_service.engine.arbitration import Ranking
from nba_service.engine.explore_config import (
    ControlTreatment,
    ExplorationConfig,
    ExplorationPolicy,
    Method,
    control_bucket,
    period_key,
)
from nba_service.engine.reasons import Stage

__all__ = ["Selection", "in_control_group", "select", "warm_up"]

# Stages of candidates that passed every filter (np.isin costs more than three compares).
_SERVED, _GROUP_LIMIT, _RANK_CUTOFF = (int(Stage.SERVED), int(Stage.GROUP_LIMIT),
                                       int(Stage.RANK_CUTOFF))


@dataclass(frozen=True)
class Selection:
    """What is served: `ranking` with its served/removed_stage rewritten, plus probabilities."""

    ranking: Ranking
    probability: np.ndarray  # float64 per served position, rank order
    explored_slots: np.ndarray  # bool per served position: not the greedy pick for that slot
    method: Method
    control_group: bool = False

    @property
    def explored(self) -> bool:
        """True when the served slate differs from what pure exploitation would serve."""
        return bool(self.explored_slots.any())

    def reason_codes(self, j: int) -> list[str]:
        """Reason codes of the j-th served action."""
        pos = int(self.ranking.served[j])
        if self.ranking.mandatory[pos]:
            return self.ranking.reason_codes(pos)
        if self.control_group:
            return ["ELIGIBLE", "CONTROL_GROUP"]
        if self.explored_slots[j]:
            return ["ELIGIBLE", "EXPLORATION"]
        return self.ranking.reason_codes(pos)


def in_control_group(config: ExplorationConfig, policy: ExplorationPolicy, customer_id: str,
                     now_s: float) -> bool:
    """Stable per customer and period: hash(salt, period, customer) < the policy's share."""
    if policy.control_share <= 0.0:
        return False
    ctl = config.control
    return control_bucket(customer_id, period_key(ctl.period, now_s), ctl.salt) \
        < policy.control_share


def select(
    ranking: Ranking,
    limit: int,
    policy: ExplorationPolicy,
    *,
    action_groups: np.ndarray,
    n_groups: int,
    max_per_group: int,
    rng: np.random.Generator,
    control: ControlTreatment | None = None,
) -> Selection:
    """Choose the served actions among the eligible ones of `ranking`.

    `action_groups[a]` is the int group code of catalog action a (codes < n_groups);
    `control` is the control-group treatment when this customer is in the control group.
    """
    served = ranking.served
    if control is None and policy.method is Method.GREEDY:
        # The common case costs two small allocations and nothing else.
        return Selection(ranking, np.ones(len(served)), np.zeros(len(served), np.bool_),
                         policy.method)
    stage = ranking.removed_stage
    mandatory = ranking.mandatory
    kept = served[mandatory[served]]
    eligible = np.flatnonzero(
        ((stage == _SERVED) | (stage == _GROUP_LIMIT) | (stage == _RANK_CUTOFF)) & ~mandatory
    )
    # Greedy order, as the kernel ranks: priority descending, ties by catalog order.
    order = eligible[np.lexsort((ranking.candidates[eligible], -ranking.priority[eligible]))]
    k = max(0, min(limit - len(kept), len(order)))
    groups = np.ascontiguousarray(action_groups[ranking.candidates[order]], dtype=np.int32)
    picks = np.empty(k, dtype=np.int64)
    greedy = np.ones(k, dtype=np.bool_)
    prob = np.empty(k, dtype=np.float64)
    if control is ControlTreatment.NONE or k == 0:
        filled = 0
    elif control is ControlTreatment.RANDOM or policy.method is Method.EPSILON_GREEDY:
        eps = 1.0 if control is ControlTreatment.RANDOM else policy.epsilon
        u = rng.random(k)
        r = rng.random(k)
        filled = kernels.epsilon_select(groups, n_groups, max_per_group, k, eps, u, r, picks,
                                        greedy, prob)
    else:
        filled = kernels.thompson_select(
            _thompson_scores(ranking, order, policy, rng), groups, n_groups, max_per_group, k,
            picks, greedy, prob,
        )
    chosen = order[picks[:filled]]
    new_stage = stage.copy()
    if control is not None:
        new_stage[order] = int(Stage.CONTROL_GROUP)
    else:
        # Eligible actions that lost their slot to exploration rank below the served ones.
        lost = order[stage[order] == int(Stage.SERVED)]
        new_stage[lost] = int(Stage.RANK_CUTOFF)
    new_stage[chosen] = int(Stage.SERVED)
    new_served = np.concatenate((kept, chosen))
    explored = np.concatenate((np.zeros(len(kept), np.bool_), ~greedy[:filled]))
    if control is not None:
        explored[:] = False
    return Selection(
        ranking=replace(ranking, served=new_served, served_actions=ranking.candidates[new_served],
                        removed_stage=new_stage),
        probability=np.concatenate((np.ones(len(kept)), prob[:filled])),
        explored_slots=explored,
        method=policy.method,
        control_group=control is not None,
    )


def _thompson_scores(ranking: Ranking, order: np.ndarray, policy: ExplorationPolicy,
                     rng: np.random.Generator) -> np.ndarray:
    """(draws + 1, E) sampled priorities theta * C * V * L, theta ~ Beta(1 + p n, 1 + (1-p) n).

    Beta via two gammas: numpy's `beta` with per-column parameters is slower than this.
    """
    p = np.clip(ranking.propensity[order], 0.0, 1.0)
    n = policy.prior_strength
    shape = (policy.draws + 1, len(order))
    x = rng.standard_gamma(1.0 + p * n, size=shape)
    y = rng.standard_gamma(1.0 + (1.0 - p) * n, size=shape)
    theta = x / (x + y)
    mult = ranking.context_weight[order] * ranking.value[order] * ranking.lever[order]
    return np.ascontiguousarray(theta * mult)


def warm_up() -> None:
    """Compile the exploration kernels before serving (see `Engine.warm_up`)."""
    kernels.warm_up()
