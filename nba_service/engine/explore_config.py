"""The catalog's `exploration:` block: how each channel/placement explores, and the control group.

Plain data and its validation only; the selection itself is in `explore.py`. The format is
documented in docs/catalog.md ("Exploration and the control group").
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from enum import StrEnum

from nba_service.engine.catalog_fields import CHANNELS, CatalogError

__all__ = [
    "ControlGroup",
    "ControlTreatment",
    "ExplorationConfig",
    "ExplorationPolicy",
    "Method",
    "Period",
    "control_bucket",
    "parse_exploration",
    "period_key",
]


class Method(StrEnum):
    GREEDY = "greedy"  # no exploration: the highest priorities are served
    EPSILON_GREEDY = "epsilon_greedy"
    THOMPSON = "thompson"


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"
    FIXED = "fixed"  # membership never rotates


class ControlTreatment(StrEnum):
    RANDOM = "random"  # uniformly random eligible actions
    NONE = "none"  # no action (mandatory actions are still served)


@dataclass(frozen=True)
class ExplorationPolicy:
    """How one channel/placement chooses among its eligible actions."""

    method: Method = Method.GREEDY
    epsilon: float = 0.1
    """epsilon_greedy: per slot, the chance of a uniform pick among the remaining actions."""
    prior_strength: float = 20.0
    """thompson: pseudo-evidence n of the Beta(1 + p n, 1 + (1 - p) n) around the propensity p."""
    draws: int = 128
    """thompson: Monte Carlo draws used to estimate the selection probability."""
    control_share: float = 0.0
    """Share of customers held out as the random control group on this channel/placement."""


@dataclass(frozen=True)
class ControlGroup:
    period: Period = Period.MONTH
    treatment: ControlTreatment = ControlTreatment.RANDOM
    salt: str = ""


@dataclass(frozen=True)
class ExplorationConfig:
    default: ExplorationPolicy = field(default_factory=ExplorationPolicy)
    # (channel or None, placement or None) -> policy; the most specific match wins.
    overrides: Mapping[tuple[str | None, str | None], ExplorationPolicy] = field(
        default_factory=dict
    )
    control: ControlGroup = field(default_factory=ControlGroup)

    def policy_for(self, channel: str, placement: str | None) -> ExplorationPolicy:
        """channel + placement, then placement alone, then channel alone, then the default."""
        if self.overrides:
            for key in ((channel, placement), (None, placement), (channel, None)):
                if key[1] is None and key[0] is None:
                    continue
                hit = self.overrides.get(key)
                if hit is not None:
                    return hit
        return self.default


_POLICY_FIELDS = {f.name for f in fields(ExplorationPolicy)}


def _policy(where: str, raw: Mapping[str, object], base: ExplorationPolicy) -> ExplorationPolicy:
    def err(fld: str, msg: str) -> CatalogError:
        return CatalogError(f"exploration: {where}: field {fld!r}: {msg}")

    out = base
    if "method" in raw:
        try:
            out = replace(out, method=Method(str(raw["method"])))
        except ValueError:
            raise err("method", f"{raw['method']!r} is not one of "
                                f"{', '.join(m.value for m in Method)}") from None
    for name, lo, hi in (("epsilon", 0.0, 1.0), ("control_share", 0.0, 1.0),
                         ("prior_strength", 0.0, math.inf)):
        if name in raw:
            v = raw[name]
            if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi \
                    or not math.isfinite(v):
                raise err(name, f"must be a number in [{lo}, {hi}], got {v!r}")
            values = {name: float(v)}
            out = replace(out, **values)  # type: ignore[arg-type]
    if "draws" in raw:
        d = raw["draws"]
        if isinstance(d, bool) or not isinstance(d, int) or not 16 <= d <= 100_000:
            raise err("draws", f"must be an integer in [16, 100000], got {d!r}")
        out = replace(out, draws=d)
    if out.method is Method.THOMPSON and out.prior_strength <= 0:
        raise err("prior_strength", "must be > 0 for thompson")
    return out


def _control(raw: object) -> ControlGroup:
    if raw is None:
        return ControlGroup()
    allowed = {"period", "treatment", "salt"}
    if not isinstance(raw, Mapping) or set(raw) - allowed:
        raise CatalogError(f"exploration: field 'control_group': allowed fields are "
                           f"{', '.join(sorted(allowed))}")
    try:
        period = Period(str(raw.get("period", "month")))
    except ValueError:
        raise CatalogError(f"exploration: field 'control_group.period': {raw['period']!r} is "
                           f"not one of {', '.join(p.value for p in Period)}") from None
    try:
        treatment = ControlTreatment(str(raw.get("treatment", "random")))
    except ValueError:
        raise CatalogError(f"exploration: field 'control_group.treatment': "
                           f"{raw['treatment']!r} is not one of "
                           f"{', '.join(t.value for t in ControlTreatment)}") from None
    return ControlGroup(period, treatment, str(raw.get("salt", "")))


def parse_exploration(raw: object) -> ExplorationConfig:
    """Validate the catalog's `exploration:` block (None: greedy everywhere, no control group)."""
    if raw is None:
        return ExplorationConfig()
    if not isinstance(raw, Mapping) or set(raw) - {"default", "overrides", "control_group"}:
        raise CatalogError("exploration: allowed fields are default, overrides, control_group")
    default_raw = raw.get("default") or {}
    if not isinstance(default_raw, Mapping) or set(default_raw) - _POLICY_FIELDS:
        raise CatalogError(f"exploration: field 'default': allowed fields are "
                           f"{', '.join(sorted(_POLICY_FIELDS))}")
    default = _policy("default", default_raw, ExplorationPolicy())
    overrides: dict[tuple[str | None, str | None], ExplorationPolicy] = {}
    items = raw.get("overrides") or []
    if not isinstance(items, list):
        raise CatalogError("exploration: field 'overrides': must be a list")
    for j, item in enumerate(items):
        where = f"overrides[{j}]"
        if not isinstance(item, Mapping) or set(item) - _POLICY_FIELDS - {"channel", "placement"}:
            raise CatalogError(f"exploration: {where}: allowed fields are channel, placement, "
                               f"{', '.join(sorted(_POLICY_FIELDS))}")
        channel, placement = item.get("channel"), item.get("placement")
        if channel is None and placement is None:
            raise CatalogError(f"exploration: {where}: needs a channel and/or a placement")
        if channel is not None and channel not in CHANNELS:
            raise CatalogError(f"exploration: {where}: field 'channel': unknown channel "
                               f"{channel!r} (known: {', '.join(CHANNELS)})")
        if placement is not None and (not isinstance(placement, str) or not placement):
            raise CatalogError(f"exploration: {where}: field 'placement': must be a "
                               "non-empty string")
        key = (channel, placement)
        if key in overrides:
            raise CatalogError(f"exploration: {where}: duplicate override for {key}")
        policy_raw = {k: v for k, v in item.items() if k in _POLICY_FIELDS}
        overrides[key] = _policy(where, policy_raw, default)
    return ExplorationConfig(default, overrides, _control(raw.get("control_group")))


def period_key(period: Period, now_s: float) -> str:
    """The label of the period containing `now_s` (UTC): '2025-03', '2025-W09', '2025-Q1'..."""
    if period is Period.FIXED:
        return ""
    t = datetime.fromtimestamp(now_s, tz=UTC)
    if period is Period.DAY:
        return t.strftime("%Y-%m-%d")
    if period is Period.WEEK:
        year, week, _ = t.isocalendar()
        return f"{year}-W{week:02d}"
    if period is Period.MONTH:
        return t.strftime("%Y-%m")
    if period is Period.QUARTER:
        return f"{t.year}-Q{(t.month - 1) // 3 + 1}"
    return str(t.year)


def control_bucket(customer_id: str, period: str, salt: str = "") -> float:
    """A uniform number in [0, 1) fixed per (customer, period, salt).

    A customer is in the control group when it is below the share, so membership is stable
    within a period, rotates with it, and the groups of a smaller share are nested in a larger.
    """
    digest = hashlib.blake2b(f"{salt}\x1f{period}\x1f{customer_id}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64
