"""Plain types of the decision API, shared by the transports and the coordinator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


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
