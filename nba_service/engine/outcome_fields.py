"""Catalog configuration of outcomes: how much each response is worth and how long to wait for it.

A catalog may declare defaults at the top level and override them per action:

    outcomes: {response_window: 7d, weights: {click: 0.2, accept: 1.0, conversion: value}}
    actions:
      - id: mortgage_first_home
        response_window: 30d
        outcome_weights: {conversion: value, accept: 2.0}

A weight is a number or the word `value` (the outcome's reported value). An outcome with a
positive weight (or `value`) is a *positive response*; an impression with no positive response
inside its response window is an implicit negative at export time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from features.schema import parse_duration

__all__ = [
    "DEFAULT_OUTCOMES",
    "OUTCOME_NAMES",
    "OutcomeConfig",
    "parse_action_outcomes",
    "parse_outcome_defaults",
]

OUTCOME_NAMES: tuple[str, ...] = (
    "impression", "click", "accept", "reject", "conversion", "dismiss",
)
VALUE = "value"
DEFAULT_WINDOW_S = 7 * 86400.0


class OutcomeFieldError(ValueError):
    def __init__(self, fld: str, message: str) -> None:
        super().__init__(message)
        self.field = fld
        self.message = message


@dataclass(frozen=True)
class OutcomeConfig:
    """Response window (seconds) and per-outcome weights of one action."""

    response_window_s: float = DEFAULT_WINDOW_S
    weights: Mapping[str, float | str] = field(
        default_factory=lambda: MappingProxyType(
            {"impression": 0.0, "click": 0.2, "accept": 1.0, "reject": 0.0,
             "conversion": VALUE, "dismiss": 0.0}
        )
    )

    def weight(self, outcome: str, value: float) -> float:
        """The reward of one outcome; unknown outcomes weigh 0."""
        w = self.weights.get(outcome, 0.0)
        return float(value) if w == VALUE else float(w)

    def is_positive(self, outcome: str) -> bool:
        w = self.weights.get(outcome, 0.0)
        return w == VALUE or float(w) > 0


DEFAULT_OUTCOMES = OutcomeConfig()


def _window(fld: str, raw: object) -> float:
    try:
        value = parse_duration(raw)
    except ValueError as exc:
        raise OutcomeFieldError(fld, str(exc)) from None
    if value is None or not math.isfinite(value) or value <= 0:
        raise OutcomeFieldError(fld, "must be a positive duration, e.g. 7d")
    return value


def _weights(fld: str, raw: object, base: Mapping[str, float | str]) -> Mapping[str, float | str]:
    if not isinstance(raw, Mapping):
        raise OutcomeFieldError(fld, f"must map outcomes ({', '.join(OUTCOME_NAMES)}) to weights")
    out = dict(base)
    for name, w in raw.items():
        if name not in OUTCOME_NAMES:
            raise OutcomeFieldError(fld, f"unknown outcome {name!r} "
                                         f"(known: {', '.join(OUTCOME_NAMES)})")
        if w == VALUE:
            out[name] = VALUE
        elif isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w):
            raise OutcomeFieldError(fld, f"{name}: must be a finite number or 'value', "
                                         f"got {w!r}")
        else:
            out[name] = float(w)
    return MappingProxyType(out)


def parse_outcome_defaults(raw: object) -> OutcomeConfig:
    """The catalog's top-level `outcomes` block (absent: the built-in defaults)."""
    if raw is None:
        return DEFAULT_OUTCOMES
    if not isinstance(raw, Mapping) or set(raw) - {"response_window", "weights"}:
        raise OutcomeFieldError("outcomes", "must be a mapping with response_window and/or "
                                            "weights")
    window = DEFAULT_OUTCOMES.response_window_s
    if raw.get("response_window") is not None:
        window = _window("outcomes.response_window", raw["response_window"])
    weights = DEFAULT_OUTCOMES.weights
    if raw.get("weights") is not None:
        weights = _weights("outcomes.weights", raw["weights"], weights)
    return OutcomeConfig(window, weights)


def parse_action_outcomes(
    window_raw: object, weights_raw: object, defaults: OutcomeConfig
) -> OutcomeConfig:
    """An action's `response_window` and `outcome_weights`, merged over the catalog defaults."""
    if window_raw is None and weights_raw is None:
        return defaults
    window = defaults.response_window_s
    if window_raw is not None:
        window = _window("response_window", window_raw)
    weights = defaults.weights
    if weights_raw is not None:
        weights = _weights("outcome_weights", weights_raw, weights)
    return OutcomeConfig(window, weights)
