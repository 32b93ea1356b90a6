"""Contact policies and budgets of one decision, evaluated in plain Python: no I/O.

The store reads the customer's contact history and the budget counters (in the decision's one
pipelined round trip) and parses them into `ContactHistory` / `BudgetUsage`; `PolicyTable`
turns them into the kernel's `policy_block` array, a per-candidate lever multiplier (budget
pacing) and a readable detail for every removed candidate. The rules themselves are in
`policy_rules`; the store's admission Lua script mirrors `contact_verdict`, so what a decision
hides and what an impression may record agree exactly (docs/contact-policies.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

import numpy as np

from nba_service.engine import policy_kernel, policy_scan
from nba_service.engine.catalog import Action, Budget, Catalog, ChannelLimits, ContactPolicy
from nba_service.engine.policy_rules import (
    DAY_MS,
    FOREVER,
    HOUR_MS,
    NO_ACTION_HISTORY,
    ActionHistory,
    BudgetUsage,
    ContactHistory,
    Verdict,
    VerdictCode,
    budget_lever,
    budget_verdict,
    contact_verdict,
    ms,
    pacing_multiplier,
)
from nba_service.engine.reasons import Stage

__all__ = [
    "DAY_MS",
    "HOUR_MS",
    "ActionHistory",
    "AdmissionParams",
    "BudgetCounts",
    "BudgetUsage",
    "ContactHistory",
    "PolicyOutcome",
    "PolicyTable",
    "Verdict",
    "VerdictCode",
    "budget_lever",
    "budget_verdict",
    "contact_verdict",
    "format_verdict",
    "pacing_multiplier",
    "policy_block_when_history_unavailable",
]

_NO_USAGE = BudgetUsage()
_VERDICT_CODES = list(VerdictCode)  # policy_scan's code k is _VERDICT_CODES[k - 1]


def fmt_duration(duration_ms: int) -> str:
    for unit, size in (("d", DAY_MS), ("h", HOUR_MS), ("m", 60_000), ("s", 1000)):
        if duration_ms >= size and duration_ms % size == 0:
            return f"{duration_ms // size}{unit}"
    return f"{duration_ms}ms"


def fmt_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def format_verdict(v: Verdict, action: Action, channel: str,
                   limits: ChannelLimits | None) -> str:
    """The explanation detail of a verdict, e.g. 'max 3 impressions / 7d reached until ...'."""
    p = action.contact_policy or ContactPolicy()
    until = "" if v.until_ms == FOREVER else f" until {fmt_time(v.until_ms)}"
    window = fmt_duration(ms(p.window_s or 0))
    c = v.code
    if c is VerdictCode.ACCEPTED:
        return "accepted before; stop after accept"
    if c is VerdictCode.REJECTED:
        return (f"suppressed {fmt_duration(ms(p.suppress_after_reject_s or 0))} "
                f"after reject{until}")
    if c is VerdictCode.MAX_IMPRESSIONS:
        return f"max {p.max_impressions} impressions / {window} reached{until}"
    if c is VerdictCode.MAX_IMPRESSIONS_CHANNEL:
        return (f"max {p.max_impressions_per_channel} impressions on {channel} / {window} "
                f"reached{until}")
    if c is VerdictCode.COOLDOWN:
        return f"cooldown {fmt_duration(ms(p.cooldown_s or 0))} after last impression{until}"
    lim = limits or ChannelLimits()
    if c is VerdictCode.CHANNEL_MAX_CONTACTS:
        return f"channel {channel}: max {lim.max_contacts_per_day} contacts / 24h reached{until}"
    if c is VerdictCode.CHANNEL_COOLDOWN:
        return (f"channel {channel}: cooldown {fmt_duration(ms(lim.cooldown_s or 0))} "
                f"after last contact{until}")
    b = action.budget or Budget()
    if c is VerdictCode.BUDGET_DAY:
        return f"day cap {b.per_day} reached{until}"
    if c is VerdictCode.BUDGET_HOUR:
        return f"hour cap {b.per_hour} reached{until}"
    return "contact history unavailable; only cap-exempt actions may be served"


@dataclass(frozen=True, slots=True)
class AdmissionParams:
    """The numbers the store's admission script needs for one outcome of one action.

    Durations in ms; 0 disables a limit. `keep`/`horizon_ms` bound each stored list: the
    newest `keep` timestamps not older than the horizon are all any verdict can ever look at.
    """

    enforce: bool  # False for exempt (fallback) actions: recorded, never refused
    max_impressions: int = 0
    window_ms: int = 0
    max_per_channel: int = 0
    suppress_ms: int = 0
    stop_after_accept: bool = False
    cooldown_ms: int = 0
    channel_max_contacts: int = 0
    channel_cooldown_ms: int = 0
    per_day: int = 0
    per_hour: int = 0

    @property
    def keep(self) -> int:
        return max(self.max_impressions, 1)

    @property
    def horizon_ms(self) -> int:
        return max(self.window_ms, self.cooldown_ms)

    @property
    def contacts_keep(self) -> int:
        return max(self.channel_max_contacts, 1)

    @property
    def contacts_horizon_ms(self) -> int:
        return max(DAY_MS, self.channel_cooldown_ms)

    @property
    def has_budget(self) -> bool:
        return bool(self.per_day or self.per_hour)


@dataclass(frozen=True, slots=True)
class BudgetCounts:
    """Spent impressions of the budgeted candidates, in `PolicyTable.budgeted` order."""

    day: np.ndarray  # counts (float64, exact for any realistic count)
    hour: np.ndarray

    @classmethod
    def of(cls, ids: list[str], usage: Mapping[str, BudgetUsage]) -> BudgetCounts:
        got = [usage.get(a, _NO_USAGE) for a in ids]
        return cls(np.array([u.day for u in got], dtype=np.float64),
                   np.array([u.hour for u in got], dtype=np.float64))


class PolicyOutcome:
    """`block[i]`: 0 or the Stage that removed candidate i; `lever_scale`: None or per candidate.

    `details` (candidate position -> text) is formatted only when read, i.e. for explanations.
    """

    __slots__ = ("_codes", "_details", "_format", "_verdicts", "block", "lever_scale")

    def __init__(self, block: np.ndarray, lever_scale: np.ndarray | None,
                 verdicts: Mapping[int, Verdict] | None,
                 format_: Callable[[int, Verdict], str] | None = None,
                 codes: np.ndarray | None = None) -> None:
        """`verdicts`, or `codes`: the (n, 2) (code, until) array of `policy_scan.scan`, turned
        into Verdicts only when read (explanations, tests), never on the hot path."""
        self.block = block
        self.lever_scale = lever_scale
        self._verdicts = verdicts
        self._codes = codes
        self._format = format_
        self._details: dict[int, str] | None = None

    @property
    def verdicts(self) -> Mapping[int, Verdict]:
        if self._verdicts is None:
            codes = self._codes
            got: dict[int, Verdict] = {}
            if codes is not None:
                for i in np.flatnonzero(codes[:, 0]).tolist():
                    got[i] = Verdict(_VERDICT_CODES[int(codes[i, 0]) - 1], int(codes[i, 1]))
            self._verdicts = got
        return self._verdicts

    @property
    def details(self) -> Mapping[int, str]:
        if self._details is None:
            f = self._format
            self._details = {i: f(i, v) if f else v.code.value for i, v in self.verdicts.items()}
        return self._details


class PolicyTable:
    """The contact policies, channel limits and budgets of one catalog, ready per request."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        actions = catalog.actions
        self._ids = [a.id for a in actions]
        self._index = {a.id: i for i, a in enumerate(actions)}
        self._exempt = np.array([a.fallback for a in actions], dtype=np.bool_)
        self._has_policy = np.array([a.contact_policy is not None for a in actions],
                                    dtype=np.bool_)
        self._has_budget = np.array([a.budget is not None for a in actions], dtype=np.bool_)
        budgets = [a.budget or Budget() for a in actions]
        self._cap_day = np.array([b.per_day or 0 for b in budgets], dtype=np.float64)
        self._cap_hour = np.array([b.per_hour or 0 for b in budgets], dtype=np.float64)
        self._pacing = np.array([b.pacing for b in budgets], dtype=np.bool_)
        self._exponent = np.array([b.pacing_exponent for b in budgets], dtype=np.float64)
        self._any_budget = bool(self._has_budget.any())
        if self._any_budget:
            policy_kernel.warm_up()  # at catalog load, never inside a request
        self.channel_limits: Mapping[str, ChannelLimits] = MappingProxyType(
            dict(catalog.channel_limits))
        self._positions_cache: dict[int, tuple[np.ndarray, dict[int, int]]] = {}
        self._init_scan()
        self._budgeted_cache: dict[int, tuple[np.ndarray, tuple[list[str], list[bytes]]]] = {}

    def _init_scan(self) -> None:
        """The catalog's policies as `policy_scan` arrays, with a hash table of the action ids."""
        actions = self.catalog.actions
        self._ids_table = policy_scan.id_table([a.id.encode() for a in actions])

        def opt(x: float | None) -> int:
            return -1 if x is None else int(x)

        rows = []
        for a in actions:
            p = a.contact_policy
            q = p or ContactPolicy()
            dur = [None if x is None else ms(x) for x in
                   (q.suppress_after_reject_s, q.window_s, q.cooldown_s)]
            rows.append([int(p is not None), int(q.stop_after_accept), opt(dur[0]), opt(dur[1]),
                         opt(q.max_impressions), opt(q.max_impressions_per_channel),
                         opt(dur[2]), int(a.fallback)])
        self._params = np.array(rows, dtype=np.int64).reshape(len(actions), policy_scan.N_PARAMS)
        self._budget = np.stack([self._cap_day, self._cap_hour,
                                 self._pacing.astype(np.float64), self._exponent], axis=1)
        self._channel_bytes: dict[str, tuple[bytes, np.ndarray]] = {}
        self._prepared_cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.scan_warm_up()

    def _channel_arrays(self, channel: str) -> tuple[bytes, np.ndarray]:
        hit = self._channel_bytes.get(channel)
        if hit is None:
            lim = self.channel_limits.get(channel)
            limits = np.array([0, -1, -1] if lim is None else
                              [1, -1 if lim.max_contacts_per_day is None
                               else lim.max_contacts_per_day,
                               -1 if lim.cooldown_s is None else ms(lim.cooldown_s)],
                              dtype=np.int64)
            hit = (channel.encode(), limits)
            if len(self._channel_bytes) < 64:  # channels are few; never grow on odd input
                self._channel_bytes[channel] = hit
        return hit

    def _prepared(self, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(int64 copy of the candidates, catalog index -> position or -1), validated once and
        cached for the engine's shared read-only candidate arrays."""
        key = id(candidates)
        hit = self._prepared_cache.get(key)
        if hit is not None and hit[0] is candidates:
            return hit[1], hit[2]
        cands = np.array(candidates, dtype=np.int64)
        if len(cands) and (cands.min() < 0 or cands.max() >= len(self.catalog)):
            raise ValueError("candidate index out of range of the catalog")
        pos = np.full(len(self.catalog), -1, dtype=np.int64)
        pos[cands] = np.arange(len(cands), dtype=np.int64)
        if not candidates.flags.writeable:
            if len(self._prepared_cache) >= 256:
                self._prepared_cache.clear()
            self._prepared_cache[key] = (candidates, cands, pos)
        return cands, pos

    def scan(self, candidates: np.ndarray, channel: str, history: policy_scan.Buffers,
             day: policy_scan.Buffers, hour: policy_scan.Buffers,
             now_ms: int) -> PolicyOutcome | None:
        """`evaluate` from the raw replies, as `policy_scan.buffers` joins them: one Numba call.

        The same verdicts as `parse_history` + `evaluate` (the reference, held equal by a
        differential test), at a fraction of the cost. None when a reply cannot be split
        unambiguously; the caller then takes the reference path.
        """
        cands, pos = self._prepared(candidates)
        n = len(cands)
        ch, limits = self._channel_arrays(channel)
        block = np.empty(n, dtype=np.int32)
        codes = np.empty((n, 2), dtype=np.int64)
        lever = np.empty(n, dtype=np.float64)
        paced = policy_scan.scan(*history, *day, *hour, cands, pos, ch, *self._ids_table,
                                 self._params, self._budget, limits, int(now_ms), block, codes,
                                 lever)
        if paced < 0:
            return None
        actions = self.catalog.actions
        lim = self.channel_limits.get(channel)

        def describe(i: int, v: Verdict) -> str:
            return format_verdict(v, actions[int(cands[i])], channel, lim)

        return PolicyOutcome(block, lever if paced else None, None, describe, codes)

    def scan_warm_up(self) -> None:
        """Compile `policy_scan.scan` (or load it from cache) with the request-time dtypes."""
        empty = policy_scan.buffers({})
        assert empty is not None
        self.scan(np.zeros(min(1, len(self.catalog)), dtype=np.int64), "WEB", empty, empty,
                  empty, 0)

    # ------------------------------------------------------------------ reads
    def budgeted(self, candidates: np.ndarray) -> list[str]:
        """Ids of the candidates with a budget, in candidate order: the counters to read."""
        return self.budgeted_fields(candidates)[0]

    def budgeted_fields(self, candidates: np.ndarray) -> tuple[list[str], list[bytes]]:
        """`budgeted` and the same ids as bytes (the counters' hash fields); cached per shared
        candidate array, since every decision of a channel/placement asks the same."""
        key = id(candidates)
        hit = self._budgeted_cache.get(key)
        if hit is not None and hit[0] is candidates:
            return hit[1]
        ids = [self._ids[a] for a in candidates[self._has_budget[candidates]].tolist()]
        out = (ids, [a.encode() for a in ids])
        if not candidates.flags.writeable:
            if len(self._budgeted_cache) >= 256:
                self._budgeted_cache.clear()
            self._budgeted_cache[key] = (candidates, out)
        return out

    def needs_history(self, action_index: int, channel: str) -> bool:
        """False when the action can be served without knowing the customer's history."""
        if self._exempt[action_index]:
            return False
        return bool(self._has_policy[action_index] or self._has_budget[action_index]
                    or channel in self.channel_limits)

    def _positions(self, candidates: np.ndarray) -> dict[int, int]:
        """catalog index -> candidate position; cached for the engine's read-only arrays."""
        key = id(candidates)
        hit = self._positions_cache.get(key)
        if hit is not None and hit[0] is candidates:
            return hit[1]
        mapping = {a: i for i, a in enumerate(candidates.tolist())}
        if not candidates.flags.writeable:  # shared per channel/placement, never changes
            if len(self._positions_cache) >= 256:
                self._positions_cache.clear()
            self._positions_cache[key] = (candidates, mapping)
        return mapping

    # ------------------------------------------------------------------ evaluation
    def evaluate(
        self,
        candidates: np.ndarray,
        channel: str,
        history: ContactHistory,
        budgets: Mapping[str, BudgetUsage] | BudgetCounts,
        now_ms: int,
    ) -> PolicyOutcome:
        """The policy verdict of every candidate (catalog indices) for one customer.

        Equal to `contact_verdict` then `budget_verdict` per candidate, but an action without
        history can only be stopped by its channel's limits or its budget, so the work is
        proportional to the history and the budgeted candidates, not to all candidates.
        """
        n = len(candidates)
        block = np.zeros(n, dtype=np.int32)
        verdicts: dict[int, Verdict] = {}
        limits = self.channel_limits.get(channel)
        contacts = history.contacts.get(channel, ())
        actions = self.catalog.actions
        if history.actions:
            pos = self._positions(candidates)
            for action_id, h in history.actions.items():
                a = self._index.get(action_id)
                i = None if a is None else pos.get(a)
                if i is None or a is None:
                    continue
                v = contact_verdict(actions[a].contact_policy, limits, bool(self._exempt[a]), h,
                                    contacts, channel, now_ms)
                if v is not None:
                    block[i] = Stage.CONTACT_POLICY
                    verdicts[i] = v
        if limits is not None:
            v = contact_verdict(None, limits, False, NO_ACTION_HISTORY, contacts, channel, now_ms)
            if v is not None:
                hit = (block == 0) & ~self._exempt[candidates]
                block[hit] = Stage.CONTACT_POLICY
                for i in np.flatnonzero(hit).tolist():
                    verdicts[i] = v
        lever_scale: np.ndarray | None = None
        if self._any_budget:
            if not isinstance(budgets, BudgetCounts):
                ids = [self._ids[a] for a in candidates[self._has_budget[candidates]].tolist()]
                budgets = BudgetCounts.of(ids, budgets)
            over = np.empty(n, dtype=np.int8)
            lever = np.empty(n, dtype=np.float64)
            # Fresh, writable, contiguous copies: a read-only or strided array would make Numba
            # compile another specialisation inside the request.
            paced = policy_kernel.budget_pass(
                np.array(candidates, dtype=np.int64), block,
                np.array(budgets.day, dtype=np.float64),
                np.array(budgets.hour, dtype=np.float64), self._cap_day, self._cap_hour,
                self._pacing, self._exponent, (now_ms % DAY_MS) / DAY_MS,
                (now_ms % HOUR_MS) / HOUR_MS, over, lever)
            for i in np.flatnonzero(over).tolist():
                block[i] = Stage.BUDGET
                day = over[i] == policy_kernel.OVER_DAY
                period = DAY_MS if day else HOUR_MS
                verdicts[i] = Verdict(VerdictCode.BUDGET_DAY if day else VerdictCode.BUDGET_HOUR,
                                      now_ms - now_ms % period + period)
            if paced:
                lever_scale = lever

        def describe(i: int, v: Verdict) -> str:
            return format_verdict(v, actions[int(candidates[i])], channel, limits)

        return PolicyOutcome(block, lever_scale, verdicts, describe)

    def when_history_unavailable(self, candidates: np.ndarray, channel: str) -> PolicyOutcome:
        """Fail-safe: without the customer's history, only cap-exempt actions may be served.

        Every candidate that `needs_history` is blocked with CONTACT_POLICY: fallback actions
        and actions that no policy, budget or channel limit constrains stay servable.
        """
        n = len(candidates)
        block = np.zeros(n, dtype=np.int32)
        verdicts: dict[int, Verdict] = {}
        unavailable = Verdict(VerdictCode.HISTORY_UNAVAILABLE)
        text = format_verdict(unavailable, self.catalog.actions[0], channel, None)
        for i, a in enumerate(candidates.tolist()):
            if self.needs_history(int(a), channel):
                block[i] = Stage.CONTACT_POLICY
                verdicts[i] = unavailable
        return PolicyOutcome(block, None, verdicts, lambda i, v: text)

    # ------------------------------------------------------------------ writes
    def admission(self, action_index: int, channel: str | None) -> AdmissionParams:
        """What the store's outcome script enforces for an outcome of this action."""
        action = self.catalog.actions[action_index]
        p = action.contact_policy or ContactPolicy()
        limits = self.channel_limits.get(channel or "") or ChannelLimits()
        b = action.budget or Budget()
        return AdmissionParams(
            enforce=not action.fallback,
            max_impressions=p.max_impressions or 0,
            window_ms=ms(p.window_s or 0),
            max_per_channel=p.max_impressions_per_channel or 0,
            suppress_ms=ms(p.suppress_after_reject_s or 0),
            stop_after_accept=p.stop_after_accept,
            cooldown_ms=ms(p.cooldown_s or 0),
            channel_max_contacts=limits.max_contacts_per_day or 0,
            channel_cooldown_ms=ms(limits.cooldown_s or 0),
            per_day=b.per_day or 0,
            per_hour=b.per_hour or 0,
        )

    def detail(self, verdict: Verdict, action_index: int, channel: str | None) -> str:
        ch = channel or ""
        return format_verdict(verdict, self.catalog.actions[action_index], ch,
                              self.channel_limits.get(ch))


def policy_block_when_history_unavailable(
    table: PolicyTable, candidates: np.ndarray, channel: str
) -> PolicyOutcome:
    """The fail-safe hook for a decision whose history read failed (see `PolicyTable`)."""
    return table.when_history_unavailable(candidates, channel)

