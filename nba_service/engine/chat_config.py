"""The catalog's `chat:` section: queues, business hours and the gates of proactive chat invites.

Parsed and validated with the rest of the catalog, so a bad chat section fails at load with the
field and the problem, never during a request. Pure data: no I/O (the store enforces capacity and
session limits; `nba_service.chat` coordinates). Format: docs/chat.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from features.schema import FeatureSchema, Source, parse_duration
from nba_service.engine.catalog_fields import CHANNELS, CatalogError

__all__ = ["BusinessHours", "ChatConfig", "ChatQueue", "parse_chat"]

KINDS = ("sales", "service")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_QUEUE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_SPAN_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_FIELDS = frozenset({
    "channel", "placement", "queues", "max_invites_per_session", "decline_cooldown",
    "invite_hold", "capacity_max_age", "min_dwell", "min_score", "session_ttl",
    "business_hours", "session_features",
})
_QUEUE_FIELDS = frozenset({"kind", "action", "invites_per_agent", "callback"})
# Request fields of ChatTriggerRequest -> the real-time features they describe.
DEFAULT_SESSION_FEATURES: Mapping[str, str] = {
    "pages_in_session": "session_page_views",
    "dwell_time_s": "session_dwell_s",
    "cart_value": "cart_value",
    "errors_seen": "errors_seen",
}


def _err(fld: str, msg: str) -> CatalogError:
    return CatalogError(f"chat: field {fld!r}: {msg}")


@dataclass(frozen=True)
class ChatQueue:
    """One contact-centre queue and the catalog action that invites a visitor to it."""

    name: str
    kind: str  # "sales" or "service"
    action: str  # a chat_invite action id
    invites_per_agent: float = 1.0  # outstanding invites one free agent may have (overbooking)
    callback: bool = False  # offer a callback when no agent of this queue is free


@dataclass(frozen=True)
class BusinessHours:
    """Opening spans per weekday (minutes since local midnight) in one time zone."""

    timezone: str = "UTC"
    spans: tuple[tuple[tuple[int, int], ...], ...] = ((),) * 7  # Monday first
    always_open: bool = True

    def local(self, now_s: float) -> datetime:
        return datetime.fromtimestamp(now_s, tz=ZoneInfo(self.timezone))

    def is_open(self, now_s: float) -> bool:
        if self.always_open:
            return True
        t = self.local(now_s)
        minute = t.hour * 60 + t.minute
        return any(a <= minute < b for a, b in self.spans[t.weekday()])


@dataclass(frozen=True)
class ChatConfig:
    channel: str = "WEB"
    placement: str = "chat_widget"
    queues: tuple[ChatQueue, ...] = ()
    max_invites_per_session: int = 1
    decline_cooldown_s: float = 600.0
    invite_hold_s: float = 60.0
    capacity_max_age_s: float | None = 300.0
    min_dwell_s: Mapping[str, float] = field(default_factory=lambda: {"default": 30.0})
    min_score: float = 0.0
    session_ttl_s: float = 7200.0
    business_hours: BusinessHours = field(default_factory=BusinessHours)
    session_features: Mapping[str, str] = field(
        default_factory=lambda: dict(DEFAULT_SESSION_FEATURES)
    )

    def queue(self, name: str) -> ChatQueue:
        for q in self.queues:
            if q.name == name:
                return q
        raise KeyError(name)

    def queue_of_action(self, action_id: str) -> ChatQueue | None:
        for q in self.queues:
            if q.action == action_id:
                return q
        return None

    def dwell_threshold(self, page_type: str) -> float:
        return self.min_dwell_s.get(page_type, self.min_dwell_s.get("default", 0.0))


def _duration(raw: Mapping[str, object], key: str, default: float | None,
              *, allow_none: bool = False) -> float | None:
    if key not in raw:
        return default
    value = raw[key]
    if value is None and allow_none:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise _err(key, str(exc)) from None
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise _err(key, f"must be a non-negative duration, got {value!r}")
    return seconds


def _number(raw: object, fld: str, *, minimum: float = 0.0) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise _err(fld, f"must be a number, got {raw!r}")
    if raw < minimum:
        raise _err(fld, f"must be >= {minimum:g}, got {raw!r}")
    return float(raw)


def _parse_queues(raw: object, actions: Mapping[str, tuple[str, tuple[str, ...]]],
                  channel: str) -> tuple[ChatQueue, ...]:
    if not isinstance(raw, Mapping) or not raw:
        raise _err("queues", "must be a non-empty mapping of queue name -> {kind, action}")
    queues: list[ChatQueue] = []
    used: dict[str, str] = {}
    for name, q in raw.items():
        fld = f"queues.{name}"
        if not isinstance(name, str) or not _QUEUE_RE.match(name):
            raise _err(fld, "queue names are 1-64 of [A-Za-z0-9_.-]")
        if not isinstance(q, Mapping):
            raise _err(fld, "must be a mapping with kind and action")
        unknown = set(q) - _QUEUE_FIELDS
        if unknown:
            raise _err(fld, f"unknown field(s) {sorted(unknown)}")
        kind = q.get("kind")
        if kind not in KINDS:
            raise _err(f"{fld}.kind", f"must be one of {list(KINDS)}, got {kind!r}")
        action = q.get("action")
        if not isinstance(action, str) or action not in actions:
            raise _err(f"{fld}.action", f"unknown action {action!r}")
        a_type, a_channels = actions[action]
        if a_type != "chat_invite":
            raise _err(f"{fld}.action", f"{action!r} has type {a_type!r}, not chat_invite")
        if channel not in a_channels:
            raise _err(f"{fld}.action", f"{action!r} is not offered on channel {channel}")
        if action in used:
            raise _err(f"{fld}.action", f"{action!r} already belongs to queue {used[action]!r}")
        used[action] = name
        ratio = _number(q.get("invites_per_agent", 1.0), f"{fld}.invites_per_agent")
        if ratio <= 0:
            raise _err(f"{fld}.invites_per_agent", "must be > 0")
        callback = q.get("callback", False)
        if not isinstance(callback, bool):
            raise _err(f"{fld}.callback", "must be true or false")
        queues.append(ChatQueue(name, str(kind), action, ratio, callback))
    return tuple(queues)


def _parse_days(key: str) -> list[int]:
    key = key.strip().lower()
    if "-" in key:
        a, b = (p.strip() for p in key.split("-", 1))
        if a not in DAYS or b not in DAYS:
            raise ValueError(f"unknown day range {key!r}")
        i, j = DAYS.index(a), DAYS.index(b)
        return list(range(i, j + 1)) if i <= j else list(range(i, 7)) + list(range(0, j + 1))
    if key not in DAYS:
        raise ValueError(f"unknown day {key!r}; use {', '.join(DAYS)} or a range like mon-fri")
    return [DAYS.index(key)]


def _parse_spans(text: object) -> tuple[tuple[int, int], ...]:
    if text in (None, "closed"):
        return ()
    if not isinstance(text, str):
        raise ValueError(f"expected 'HH:MM-HH:MM[, HH:MM-HH:MM]' or closed, got {text!r}")
    spans = []
    for part in text.split(","):
        m = _SPAN_RE.match(part)
        if not m:
            raise ValueError(f"bad span {part.strip()!r}; expected HH:MM-HH:MM")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        a, b = h1 * 60 + m1, h2 * 60 + m2
        if m1 > 59 or m2 > 59 or h1 > 23 or b > 24 * 60 or b <= a:
            raise ValueError(f"bad span {part.strip()!r}; the end must follow the start")
        spans.append((a, b))
    return tuple(sorted(spans))


def _parse_business_hours(raw: object) -> BusinessHours:
    if raw is None:
        return BusinessHours()
    if not isinstance(raw, Mapping):
        raise _err("business_hours", "must be a mapping with timezone and hours")
    unknown = set(raw) - {"timezone", "hours"}
    if unknown:
        raise _err("business_hours", f"unknown field(s) {sorted(unknown)}")
    tz = raw.get("timezone", "UTC")
    try:
        ZoneInfo(str(tz))
    except (ZoneInfoNotFoundError, ValueError):
        raise _err("business_hours.timezone", f"unknown time zone {tz!r}") from None
    hours = raw.get("hours")
    if not isinstance(hours, Mapping) or not hours:
        raise _err("business_hours.hours", "must map days (mon, mon-fri, ...) to HH:MM-HH:MM")
    spans: list[tuple[tuple[int, int], ...]] = [()] * 7
    for key, text in hours.items():
        try:
            days = _parse_days(str(key))
            day_spans = _parse_spans(text)
        except ValueError as exc:
            raise _err(f"business_hours.hours.{key}", str(exc)) from None
        for d in days:
            spans[d] = day_spans
    return BusinessHours(timezone=str(tz), spans=tuple(spans), always_open=False)


def _parse_dwell(raw: object, schema: FeatureSchema) -> dict[str, float]:
    if raw is None:
        return {"default": 30.0}
    if not isinstance(raw, Mapping):
        raw = {"default": raw}
    page_type = schema.get("page_type")
    vocab = set(page_type.vocabulary) if page_type is not None else set()
    out: dict[str, float] = {}
    for key, value in raw.items():
        if key != "default" and vocab and key not in vocab:
            raise _err(f"min_dwell.{key}", f"unknown page_type; use default or {sorted(vocab)}")
        seconds = _duration({str(key): value}, str(key), None)
        assert seconds is not None
        out[str(key)] = seconds
    out.setdefault("default", 30.0)
    return out


def _parse_session_features(raw: object, schema: FeatureSchema) -> dict[str, str]:
    mapping = dict(DEFAULT_SESSION_FEATURES)
    if raw is not None:
        if not isinstance(raw, Mapping):
            raise _err("session_features", "must map request fields to real-time features")
        for key, value in raw.items():
            if key not in DEFAULT_SESSION_FEATURES:
                raise _err("session_features", f"unknown request field {key!r}; use "
                           f"{sorted(DEFAULT_SESSION_FEATURES)}")
            mapping[str(key)] = str(value)
    realtime = {f.name for f in schema.of(Source.REALTIME)}
    # A mapped feature the schema lacks is dropped: the request value then only feeds the gates.
    return {k: v for k, v in mapping.items() if v in realtime}


def parse_chat(
    raw: object, actions: Sequence[tuple[str, str, tuple[str, ...]]], schema: FeatureSchema
) -> ChatConfig | None:
    """Validate the `chat:` section; `actions` are (id, type, channels) of the catalog."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise CatalogError("chat: expected a mapping")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise CatalogError(f"chat: unknown field(s) {sorted(unknown)}")
    channel = raw.get("channel", "WEB")
    if channel not in CHANNELS:
        raise _err("channel", f"unknown channel {channel!r}")
    placement = raw.get("placement", "chat_widget")
    if not isinstance(placement, str):
        raise _err("placement", "must be a string")
    by_id = {a_id: (a_type, chans) for a_id, a_type, chans in actions}
    queues = _parse_queues(raw.get("queues"), by_id, str(channel))
    max_invites = raw.get("max_invites_per_session", 1)
    if isinstance(max_invites, bool) or not isinstance(max_invites, int) or max_invites < 0:
        raise _err("max_invites_per_session", f"must be an integer >= 0, got {max_invites!r}")
    hold = _duration(raw, "invite_hold", 60.0)
    ttl = _duration(raw, "session_ttl", 7200.0)
    assert hold is not None and ttl is not None
    if hold <= 0:
        raise _err("invite_hold", "must be > 0")
    if ttl < hold:
        raise _err("session_ttl", "must be at least invite_hold")
    cooldown = _duration(raw, "decline_cooldown", 600.0)
    assert cooldown is not None
    return ChatConfig(
        channel=str(channel),
        placement=placement,
        queues=queues,
        max_invites_per_session=max_invites,
        decline_cooldown_s=cooldown,
        invite_hold_s=hold,
        capacity_max_age_s=_duration(raw, "capacity_max_age", 300.0, allow_none=True),
        min_dwell_s=_parse_dwell(raw.get("min_dwell"), schema),
        min_score=_number(raw.get("min_score", 0.0), "min_score"),
        session_ttl_s=ttl,
        business_hours=_parse_business_hours(raw.get("business_hours")),
        session_features=_parse_session_features(raw.get("session_features"), schema),
    )
