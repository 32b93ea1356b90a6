"""Catalog blocks that are plain data: types, treatments, validity, policies, budgets, arbitration.

Contact policies and budgets are parsed and validated here; they are enforced by the store
(Redis counters), which passes the outcome to the kernel as `policy_block`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

from features.schema import DType, FeatureSchema, Source, parse_duration

CHANNELS: tuple[str, ...] = (
    "WEB", "MOBILE_APP", "CALL_CENTRE", "CHAT", "EMAIL", "BRANCH", "SMS", "ATM",
)



class CatalogError(ValueError):
    """The catalog is invalid; the message names the action (or channel), field and problem."""


class FieldError(ValueError):
    def __init__(self, fld: str, message: str) -> None:
        super().__init__(message)
        self.field = fld
        self.message = message


@dataclass(frozen=True)
class Treatment:
    """What the customer sees on one channel."""

    title: str
    text: str
    cta: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class Validity:
    """Offerable from `start_s` (inclusive) to `end_s` (exclusive), epoch seconds UTC."""

    start_s: float = -math.inf
    end_s: float = math.inf

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.start_s) or math.isfinite(self.end_s)

    def contains(self, now_s: float) -> bool:
        return self.start_s <= now_s < self.end_s


@dataclass(frozen=True)
class ContactPolicy:
    """Per customer and action; enforced by the store (counters in Redis), not by the kernel.

    max_impressions within `window_s`; after a reject, suppressed for `suppress_after_reject_s`;
    after an accept, never again if `stop_after_accept`; at least `cooldown_s` between two
    impressions. Durations are seconds; None disables that part.
    """

    max_impressions: int | None = None
    window_s: float | None = None
    suppress_after_reject_s: float | None = None
    stop_after_accept: bool = False
    cooldown_s: float | None = None
    max_impressions_per_channel: int | None = None  # within `window_s`, on each channel apart


@dataclass(frozen=True)
class Budget:
    """Impressions allowed across all customers, per clock hour / UTC day (None: unlimited).

    With `pacing`, the action's lever shrinks as spending runs ahead of the clock
    (docs/contact-policies.md has the formula); `pacing_exponent` sharpens that curve.
    """

    per_hour: int | None = None
    per_day: int | None = None
    pacing: bool = True
    pacing_exponent: float = 1.0


@dataclass(frozen=True)
class ChannelLimits:
    """Per customer and channel, across actions: contact pressure limits (None disables)."""

    max_contacts_per_day: int | None = None  # rolling 24 h
    cooldown_s: float | None = None  # after any contact on the channel


class ActionType(StrEnum):
    OFFER = "offer"
    SERVICE = "service"
    RETENTION = "retention"
    CHAT_INVITE = "chat_invite"
    INFO = "info"


@dataclass(frozen=True)
class ServiceBeforeSales:
    """On assisted channels, a customer with open complaints gets no sales actions."""

    assisted_channels: frozenset[str]
    complaint_feature: str
    sales_types: frozenset[ActionType] = frozenset({ActionType.OFFER})


@dataclass(frozen=True)
class ArbitrationConfig:
    max_per_group: int = 0  # 0 -> no limit
    service_before_sales: ServiceBeforeSales | None = None


def parse_treatments(raw: object, channels: tuple[str, ...]) -> dict[str, Treatment]:
    if not isinstance(raw, Mapping) or not raw:
        raise FieldError("treatments", "needs a mapping of channel (or 'default') to treatment")
    out: dict[str, Treatment] = {}
    for key, t in raw.items():
        if key != "default" and key not in CHANNELS:
            raise FieldError("treatments", f"unknown channel {key!r}")
        if key != "default" and key not in channels:
            raise FieldError("treatments", f"treatment for {key} but the action is not "
                                            f"offered on {key}")
        if not isinstance(t, Mapping) or not isinstance(t.get("title"), str) \
                or not isinstance(t.get("text"), str) or set(t) - {"title", "text", "cta", "url"}:
            raise FieldError("treatments", f"{key}: needs string title and text "
                                            "(optional cta, url)")
        cta, url = t.get("cta"), t.get("url")
        out[str(key)] = Treatment(t["title"], t["text"], None if cta is None else str(cta),
                                  None if url is None else str(url))
    missing = [ch for ch in channels if ch not in out]
    if missing and "default" not in out:
        raise FieldError("treatments", f"no treatment for {', '.join(missing)} and no default")
    return out


def _iso_seconds(fld: str, raw: object, *, end: bool) -> float:
    text = raw.isoformat() if isinstance(raw, date) else str(raw)
    try:
        if len(text) == 10:  # a date: the window covers that whole day (UTC)
            d = datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
            return (d + timedelta(days=1 if end else 0)).timestamp()
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise FieldError("validity", f"{fld} {raw!r} is not an ISO date or datetime") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def parse_validity(raw: object) -> Validity:
    if raw is None:
        return Validity()
    if not isinstance(raw, Mapping) or not raw or set(raw) - {"start", "end"}:
        raise FieldError("validity", "must be a mapping with start and/or end")
    start, stop = -math.inf, math.inf
    if raw.get("start") is not None:
        start = _iso_seconds("start", raw["start"], end=False)
    if raw.get("end") is not None:
        stop = _iso_seconds("end", raw["end"], end=True)
    if not start < stop:
        raise FieldError("validity", "start must be before end")
    return Validity(start, stop)


def _count(fld: str, raw: object) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise FieldError(fld, f"must be an integer >= 1, got {raw!r}")
    return raw


def _duration(fld: str, raw: object) -> float | None:
    try:
        value = parse_duration(raw)
    except ValueError as exc:
        raise FieldError(fld, str(exc)) from None
    if value is not None and not value > 0:
        raise FieldError(fld, "must be a positive duration")
    return value


def parse_contact_policy(raw: object) -> ContactPolicy | None:
    if raw is None:
        return None
    allowed = {"max_impressions", "window", "suppress_after_reject", "stop_after_accept",
               "cooldown", "max_impressions_per_channel"}
    if not isinstance(raw, Mapping) or set(raw) - allowed:
        raise FieldError("contact_policy", f"allowed fields: {', '.join(sorted(allowed))}")
    f = "contact_policy"
    stop = raw.get("stop_after_accept", False)
    if not isinstance(stop, bool):
        raise FieldError(f"{f}.stop_after_accept", "must be true or false")
    policy = ContactPolicy(
        max_impressions=_count(f"{f}.max_impressions", raw.get("max_impressions")),
        window_s=_duration(f"{f}.window", raw.get("window")),
        suppress_after_reject_s=_duration(f"{f}.suppress_after_reject",
                                          raw.get("suppress_after_reject")),
        stop_after_accept=stop,
        cooldown_s=_duration(f"{f}.cooldown", raw.get("cooldown")),
        max_impressions_per_channel=_count(f"{f}.max_impressions_per_channel",
                                           raw.get("max_impressions_per_channel")),
    )
    if policy.max_impressions_per_channel is not None and policy.window_s is None:
        raise FieldError(f, "max_impressions_per_channel needs a window")
    if policy.window_s is not None and policy.max_impressions is None \
            and policy.max_impressions_per_channel is None:
        raise FieldError(f, "max_impressions and window go together")
    if policy.max_impressions is not None and policy.window_s is None:
        raise FieldError(f, "max_impressions and window go together")
    return policy


def parse_budget(raw: object) -> Budget | None:
    if raw is None:
        return None
    allowed = {"per_hour", "per_day", "pacing", "pacing_exponent"}
    if not isinstance(raw, Mapping) or set(raw) - allowed \
            or raw.get("per_hour") is None and raw.get("per_day") is None:
        raise FieldError("budget", "must be a mapping with per_hour and/or per_day "
                                   "(optional pacing, pacing_exponent)")
    pacing = raw.get("pacing", True)
    if not isinstance(pacing, bool):
        raise FieldError("budget.pacing", "must be true or false")
    exponent = raw.get("pacing_exponent", 1.0)
    if isinstance(exponent, bool) or not isinstance(exponent, int | float) \
            or not math.isfinite(exponent) or not exponent > 0:
        raise FieldError("budget.pacing_exponent", f"must be a number > 0, got {exponent!r}")
    return Budget(_count("budget.per_hour", raw.get("per_hour")),
                  _count("budget.per_day", raw.get("per_day")),
                  pacing=pacing, pacing_exponent=float(exponent))


def parse_channel_limits(raw: object) -> dict[str, ChannelLimits]:
    """`max_contacts_per_day` / `contact_cooldown` of each channel under `channels:`."""
    out: dict[str, ChannelLimits] = {}
    if not isinstance(raw, Mapping):
        return out
    for ch, conf in raw.items():
        if not isinstance(conf, Mapping):
            continue
        try:
            limits = ChannelLimits(
                max_contacts_per_day=_count("max_contacts_per_day",
                                            conf.get("max_contacts_per_day")),
                cooldown_s=_duration("contact_cooldown", conf.get("contact_cooldown")),
            )
        except FieldError as exc:
            raise CatalogError(f"channel {ch!r}: field {exc.field!r}: {exc.message}") from None
        if limits != ChannelLimits():
            out[str(ch)] = limits
    return out


def parse_arbitration(raw: object, schema: FeatureSchema) -> ArbitrationConfig:
    if raw is None:
        return ArbitrationConfig()
    if not isinstance(raw, Mapping) or set(raw) - {"max_per_group", "service_before_sales"}:
        raise CatalogError("arbitration: allowed fields are max_per_group, service_before_sales")
    k = raw.get("max_per_group", 0)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise CatalogError("arbitration: field 'max_per_group': must be an integer >= 0")
    sbs_raw = raw.get("service_before_sales")
    sbs = None
    if sbs_raw is not None:
        where = "arbitration: field 'service_before_sales'"
        if not isinstance(sbs_raw, Mapping):
            raise CatalogError(f"{where}: must be a mapping")
        assisted = sbs_raw.get("assisted_channels", [])
        if not isinstance(assisted, list) or any(c not in CHANNELS for c in assisted):
            raise CatalogError(f"{where}: 'assisted_channels' must list known channels")
        feat = sbs_raw.get("complaint_feature")
        spec = schema.get(str(feat))
        if spec is None or spec.source is Source.ACTION or spec.dtype is DType.CATEGORICAL:
            raise CatalogError(f"{where}: 'complaint_feature' {feat!r} must be a numeric "
                               "customer feature of the schema")
        types_raw = sbs_raw.get("sales_types", ["offer"])
        try:
            types = frozenset(ActionType(t) for t in types_raw)
        except (ValueError, TypeError):
            raise CatalogError(f"{where}: 'sales_types' must list action types") from None
        sbs = ServiceBeforeSales(frozenset(assisted), str(feat), types)
    return ArbitrationConfig(max_per_group=k, service_before_sales=sbs)
