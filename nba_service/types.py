"""Plain types of the decision API, shared by the transports and the coordinator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from nba_service.decide import CatalogRuntime
    from nba_service.engine.arbitration import Ranking


@dataclass(frozen=True)
class DecisionRequest:
    customer_id: str
    channel: str
    placement: str = ""
    context: Mapping[str, object] = field(default_factory=dict)
    limit: int = 3
    request_id: str = ""
    explain: bool = False


@dataclass(frozen=True)
class OutcomeEvent:
    customer_id: str
    action_id: str
    outcome: str
    event_id: str
    decision_id: str = ""
    value: float = 0.0
    ts_ms: int | None = None
    channel: str | None = None


@dataclass(frozen=True)
class RankedAction:
    action_id: str
    action_type: str
    group: str
    rank: int
    priority: float
    propensity: float
    value: float
    context_weight: float
    lever: float
    treatment: Mapping[str, str]
    reason_codes: list[str]
    selection_probability: float


@dataclass
class Explanation:
    candidates: list[dict[str, object]]
    contributions: dict[str, list[tuple[str, float]]]


@dataclass(frozen=True, slots=True)
class DecisionTrace:
    """What the decision log needs beyond the response (references only, nothing copied).

    `customer_row` is the encoded float32 row shared by all candidates (point-in-time
    features); `ranking` the engine's per-candidate arrays; `runtime` the catalog runtime
    (catalog + encoder) the decision used.
    """

    customer_id: str
    channel: str
    placement: str
    ts_ms: int
    customer_row: np.ndarray
    ranking: Ranking
    runtime: CatalogRuntime


@dataclass(frozen=True, slots=True)
class ShadowScores:
    """A shadow challenger's scores for one decision: logged, never served.

    `action_ids[i]` is the i-th candidate the decision considered, `scores[i]` the challenger's
    propensity for it.
    """

    model_version: str
    action_ids: tuple[str, ...]
    scores: tuple[float, ...]


@dataclass
class Decision:
    decision_id: str
    actions: list[RankedAction]
    model_version: str
    catalog_version: str
    degraded_reasons: list[str]
    timing: dict[str, int]
    request_id: str = ""
    explanation: Explanation | None = None
    trace: DecisionTrace | None = None
    # The served slate differs from pure exploitation (epsilon-greedy or Thompson exploration).
    explored: bool = False
    # The customer is in this period's random control group (see docs/catalog.md).
    control_group: bool = False
    # Scores of the shadow challenger (champion/challenger in shadow mode), for the log only.
    shadow: ShadowScores | None = None
