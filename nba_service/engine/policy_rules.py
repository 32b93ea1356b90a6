"""The contact policy and budget rules themselves: data in, verdict out (no I/O, no numpy).

`contact_verdict` is the one definition of what a decision hides; the store's admission Lua
script mirrors it check by check, and docs/contact-policies.md states it in words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from nba_service.engine.catalog import Budget, ChannelLimits, ContactPolicy
from nba_service.engine.reasons import Stage

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
FOREVER = -1  # `Verdict.until_ms` of a block that never lifts by itself


@dataclass(frozen=True, slots=True)
class ActionHistory:
    """What the policies need to know about one action for one customer (times in epoch ms)."""

    impressions: tuple[int, ...] = ()  # ascending; the newest ones only (pruned by the store)
    by_channel: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    last_reject_ms: int | None = None
    accepted_ms: int | None = None  # first accept


NO_ACTION_HISTORY = ActionHistory()


@dataclass(frozen=True, slots=True)
class ContactHistory:
    actions: Mapping[str, ActionHistory] = field(default_factory=dict)
    contacts: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # per channel

    def of(self, action_id: str) -> ActionHistory:
        return self.actions.get(action_id, NO_ACTION_HISTORY)


EMPTY_HISTORY = ContactHistory()


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """Impressions already spent in the current UTC day and clock hour."""

    day: int = 0
    hour: int = 0


class VerdictCode(StrEnum):
    """Why an action may not be shown now; the order of the members is the order of checks."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    MAX_IMPRESSIONS = "max_impressions"
    MAX_IMPRESSIONS_CHANNEL = "max_impressions_channel"
    COOLDOWN = "cooldown"
    CHANNEL_MAX_CONTACTS = "channel_max_contacts"
    CHANNEL_COOLDOWN = "channel_cooldown"
    BUDGET_DAY = "budget_day"
    BUDGET_HOUR = "budget_hour"
    HISTORY_UNAVAILABLE = "history_unavailable"

    @property
    def stage(self) -> Stage:
        if self in (VerdictCode.BUDGET_DAY, VerdictCode.BUDGET_HOUR):
            return Stage.BUDGET
        return Stage.CONTACT_POLICY


@dataclass(frozen=True, slots=True)
class Verdict:
    code: VerdictCode
    until_ms: int = FOREVER  # blocked while now < until_ms; FOREVER: until something changes


def _in_window(times: Sequence[int], now_ms: int, window_ms: int) -> int:
    """How many of the ascending `times` satisfy t > now - window (later ones included)."""
    lo = now_ms - window_ms
    n = len(times)
    k = n
    while k > 0 and times[k - 1] > lo:
        k -= 1
    return n - k


def _cap_verdict(code: VerdictCode, times: Sequence[int], cap: int, window_ms: int,
                 now_ms: int) -> Verdict | None:
    c = _in_window(times, now_ms, window_ms)
    if c < cap:
        return None
    # Lifts when all but cap-1 of the counted impressions have left the window.
    first = len(times) - c
    return Verdict(code, times[first + c - cap] + window_ms)


def contact_verdict(
    policy: ContactPolicy | None,
    limits: ChannelLimits | None,
    exempt: bool,
    history: ActionHistory,
    contacts: Sequence[int],
    channel: str,
    now_ms: int,
) -> Verdict | None:
    """The first contact policy that forbids showing the action on `channel` at `now_ms`.

    `exempt` actions (fallbacks) ignore the channel's limits; `contacts` are the customer's
    contact times on `channel`. None: allowed.
    """
    if policy is not None:
        if policy.stop_after_accept and history.accepted_ms is not None:
            return Verdict(VerdictCode.ACCEPTED)
        if policy.suppress_after_reject_s is not None and history.last_reject_ms is not None:
            until = history.last_reject_ms + ms(policy.suppress_after_reject_s)
            if now_ms < until:
                return Verdict(VerdictCode.REJECTED, until)
        if policy.window_s is not None:
            window = ms(policy.window_s)
            if policy.max_impressions is not None:
                v = _cap_verdict(VerdictCode.MAX_IMPRESSIONS, history.impressions,
                                 policy.max_impressions, window, now_ms)
                if v is not None:
                    return v
            if policy.max_impressions_per_channel is not None:
                v = _cap_verdict(VerdictCode.MAX_IMPRESSIONS_CHANNEL,
                                 history.by_channel.get(channel, ()),
                                 policy.max_impressions_per_channel, window, now_ms)
                if v is not None:
                    return v
        if policy.cooldown_s is not None and history.impressions:
            until = history.impressions[-1] + ms(policy.cooldown_s)
            if now_ms < until:
                return Verdict(VerdictCode.COOLDOWN, until)
    if limits is not None and not exempt:
        if limits.max_contacts_per_day is not None:
            v = _cap_verdict(VerdictCode.CHANNEL_MAX_CONTACTS, contacts,
                             limits.max_contacts_per_day, DAY_MS, now_ms)
            if v is not None:
                return v
        if limits.cooldown_s is not None and contacts:
            until = contacts[-1] + ms(limits.cooldown_s)
            if now_ms < until:
                return Verdict(VerdictCode.CHANNEL_COOLDOWN, until)
    return None


def budget_verdict(budget: Budget | None, usage: BudgetUsage, now_ms: int) -> Verdict | None:
    """Blocked while the current UTC day's (or clock hour's) spend has reached its cap."""
    if budget is None:
        return None
    if budget.per_day is not None and usage.day >= budget.per_day:
        return Verdict(VerdictCode.BUDGET_DAY, now_ms - now_ms % DAY_MS + DAY_MS)
    if budget.per_hour is not None and usage.hour >= budget.per_hour:
        return Verdict(VerdictCode.BUDGET_HOUR, now_ms - now_ms % HOUR_MS + HOUR_MS)
    return None


def pacing_multiplier(used: int, cap: int, elapsed_fraction: float,
                      exponent: float = 1.0) -> float:
    """Lever multiplier of a budget `cap` with `used` spent, `elapsed_fraction` into its period.

    m = clip(remaining / time_left, 0, 1) ** exponent, with remaining = (cap - used) / cap and
    time_left = 1 - elapsed_fraction: 1 on or behind pace, shrinking smoothly as spending
    runs ahead of the clock, 0 when exhausted.
    """
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    remaining = (cap - used) / cap
    if remaining <= 0.0:
        return 0.0
    time_left = 1.0 - min(max(elapsed_fraction, 0.0), 1.0)
    if remaining >= time_left:
        return 1.0
    return float((remaining / time_left) ** exponent)


def budget_lever(budget: Budget, usage: BudgetUsage, now_ms: int) -> float:
    """The pacing multiplier of a budget: the tighter of its day and hour periods."""
    if not budget.pacing:
        return 1.0
    m = 1.0
    if budget.per_day is not None:
        m = min(m, pacing_multiplier(usage.day, budget.per_day, (now_ms % DAY_MS) / DAY_MS,
                                     budget.pacing_exponent))
    if budget.per_hour is not None:
        m = min(m, pacing_multiplier(usage.hour, budget.per_hour, (now_ms % HOUR_MS) / HOUR_MS,
                                     budget.pacing_exponent))
    return m



def ms(seconds: float) -> int:
    return int(round(seconds * 1000))
