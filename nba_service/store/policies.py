"""Storage of contact history and budget counters, and their reads for one decision.

Contact history lives in the customer's hash `nba:{c:<id>}:h` (one slot with every other key of
the customer). The fields the policies use start with `#`, which no action id can, so they
never collide with the per-outcome counters `<action>|<outcome>|n` / `|t` / `|c` / `<action>|value`:

    #i|<action>             impression times (epoch ms, ascending, comma separated), newest
                            max(max_impressions, 1) within max(window, cooldown)
    #ic|<action>|<channel>  the same per channel, when max_impressions_per_channel is set
    #r|<action>             time of the latest reject
    #a|<action>             time of the first accept
    #k|<channel>            contact times on the channel (impressions of non-fallback actions),
                            newest max(max_contacts_per_day, 1) within max(24 h, cooldown)

The lists are pruned by the outcome script on every write, so the hash stays bounded by the
catalog's size and caps. Budget counters are one hash per UTC day, `nba:{b}:bd:<YYYYMMDD>`, and
one per clock hour, `nba:{b}:bh:<YYYYMMDDHH>`, each with one field per budgeted action (its
impressions in that period): a decision reads every counter it needs with two HGETALLs, however
many budgeted candidates it has. See docs/contact-policies.md for why they live outside the
customer's slot.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nba_service.engine import policy_scan
from nba_service.engine.policies import (
    DAY_MS,
    HOUR_MS,
    ActionHistory,
    BudgetCounts,
    BudgetUsage,
    ContactHistory,
    PolicyOutcome,
    PolicyTable,
    Verdict,
    VerdictCode,
)
from nba_service.store.keys import PREFIX, customer_tag

__all__ = [
    "BUDGET_LUA",
    "BudgetCounter",
    "PolicyRead",
    "budget_counts",
    "budget_keys",
    "budget_read_commands",
    "decision_key",
    "parse_history",
]

_IMPRESSIONS, _BY_CHANNEL, _REJECT, _ACCEPT, _CONTACTS = b"#i", b"#ic", b"#r", b"#a", b"#k"

BUDGET_TTL_S = 2 * 86400
"""A day's budget hash outlives its day by a day, so late reads still see the final counts."""


def decision_key(customer_id: str, decision_id: str) -> str:
    """Served actions of one decision (action_id -> selection probability), with a TTL."""
    return f"{PREFIX}:{customer_tag(customer_id)}:d:{decision_id}"


def budget_keys(now_ms: int) -> tuple[str, str]:
    """The day's and the clock hour's budget hash (UTC), fields = action ids."""
    hour = time.strftime("%Y%m%d%H", time.gmtime(now_ms // 1000))
    return f"{PREFIX}:{{b}}:bd:{hour[:8]}", f"{PREFIX}:{{b}}:bh:{hour}"


_NUMBER = re.compile(rb"-?[0-9]{1,18}")


def _int(raw: bytes) -> int:
    """A stored number: optional '-', 1 to 18 ASCII digits (what policy_scan reads too)."""
    if not isinstance(raw, bytes) or _NUMBER.fullmatch(raw) is None:
        raise ValueError(f"not a stored number: {raw!r}")
    return int(raw)


def _times(raw: bytes) -> tuple[int, ...]:
    return tuple(map(_int, raw.split(b","))) if raw else ()


def parse_history(raw: Mapping[bytes, bytes]) -> ContactHistory:
    """The policy view of a history hash (HGETALL reply); other fields are ignored."""
    if not raw:
        return ContactHistory()
    imps: dict[str, tuple[int, ...]] = {}
    by_channel: dict[str, dict[str, tuple[int, ...]]] = {}
    rejects: dict[str, int] = {}
    accepts: dict[str, int] = {}
    contacts: dict[str, tuple[int, ...]] = {}
    for key, value in raw.items():
        if not key.startswith(b"#"):
            continue
        kind, _, rest = key.partition(b"|")
        try:
            if kind == _IMPRESSIONS:
                imps[rest.decode()] = _times(value)
            elif kind == _BY_CHANNEL:
                action, _, channel = rest.rpartition(b"|")
                by_channel.setdefault(action.decode(), {})[channel.decode()] = _times(value)
            elif kind == _REJECT:
                rejects[rest.decode()] = _int(value)
            elif kind == _ACCEPT:
                accepts[rest.decode()] = _int(value)
            elif kind == _CONTACTS:
                contacts[rest.decode()] = _times(value)
        except ValueError:
            # A field this version cannot read counts as absent, never as a crash.
            continue
    names = imps.keys() | by_channel.keys() | rejects.keys() | accepts.keys()
    actions = {
        a: ActionHistory(imps.get(a, ()), by_channel.get(a, {}), rejects.get(a),
                         accepts.get(a))
        for a in names
    }
    return ContactHistory(actions, contacts)


def budget_read_commands(now_ms: int) -> list[tuple[str, ...]]:
    """The two reads that bring every budget counter of the period into the decision's fetch.

    Constant in the number of budgeted candidates: the counters of actions that are not
    candidates come along (a hash holds at most one field per budgeted action of the catalog),
    which costs less than naming each field in the request.
    """
    day, hour = budget_keys(now_ms)
    return [("HGETALL", day), ("HGETALL", hour)]


def _count(reply: Mapping[bytes, Any], field: bytes) -> int:
    raw = reply.get(field)
    try:
        return _int(raw) if raw is not None else 0
    except ValueError:
        return 0  # a counter this version cannot read counts as unspent, never as a crash


def _counts(fields: Sequence[bytes], reply: Any) -> np.ndarray:
    if not reply or not isinstance(reply, Mapping):
        return np.zeros(len(fields), dtype=np.float64)
    return np.array([_count(reply, f) for f in fields], dtype=np.float64)


def budget_counts(fields: Sequence[bytes], day: Any, hour: Any) -> BudgetCounts:
    """The counters of `fields` (action ids, bytes) from the two HGETALL replies."""
    return BudgetCounts(_counts(fields, day), _counts(fields, hour))


class PolicyRead:
    """What one decision reads for its policies, riding in the one pipelined fetch.

    `commands` go into `OnlineStore.fetch(extra=...)` (the history hash is always fetched);
    `evaluate` then turns the snapshot's history and these commands' replies into the
    kernel's `policy_block`, the pacing lever multipliers and the removal details.
    """

    __slots__ = ("budget_fields", "budget_ids", "channel", "commands", "now_ms", "table")

    def __init__(self, table: PolicyTable, candidates: np.ndarray, channel: str,
                 now_ms: int) -> None:
        self.table = table
        self.channel = channel
        self.now_ms = now_ms
        self.budget_ids, self.budget_fields = table.budgeted_fields(candidates)
        self.commands = budget_read_commands(now_ms) if self.budget_ids else []

    def evaluate(self, candidates: np.ndarray, history: Mapping[bytes, bytes],
                 replies: Sequence[Any]) -> PolicyOutcome:
        """`replies`: the replies to `commands`, in order (the first ones of the fetch's extra).

        One Numba call over the replies as they came (`PolicyTable.scan`); replies it cannot
        read unambiguously go through the Python reference, with the same result.
        """
        h = policy_scan.buffers(history)
        day = hour = policy_scan.buffers(None)
        if self.commands:
            day, hour = policy_scan.buffers(replies[0]), policy_scan.buffers(replies[1])
        if h is not None and day is not None and hour is not None:
            out = self.table.scan(candidates, self.channel, h, day, hour, self.now_ms)
            if out is not None:
                return out
        return self.reference(candidates, history, replies)

    def reference(self, candidates: np.ndarray, history: Mapping[bytes, bytes],
                  replies: Sequence[Any]) -> PolicyOutcome:
        """`evaluate` in plain Python: `parse_history` + `PolicyTable.evaluate`."""
        if self.commands:
            counts = budget_counts(self.budget_fields, replies[0], replies[1])
        else:
            counts = BudgetCounts(np.zeros(0), np.zeros(0))
        return self.table.evaluate(candidates, self.channel, parse_history(history), counts,
                                   self.now_ms)


# KEYS[1]: the budget hash of the UTC day, KEYS[2]: of the clock hour (both in slot {b}).
# ARGV: action id, per_day (0 = none), per_hour (0 = none), ttl_s, op.
# op 'take': spend one impression if neither cap is reached, else refuse ({0, 'day'|'hour'});
# op 'spend': spend one whatever the caps (exempt actions); op 'give': return one.
BUDGET_LUA = """
local a = ARGV[1]
local d = tonumber(redis.call('HGET', KEYS[1], a) or '0')
local h = tonumber(redis.call('HGET', KEYS[2], a) or '0')
local op = ARGV[5]
if op == 'give' then
  if d > 0 then d = redis.call('HINCRBY', KEYS[1], a, -1) end
  if h > 0 then h = redis.call('HINCRBY', KEYS[2], a, -1) end
  return {1, d, h}
end
if op == 'take' then
  local per_day, per_hour = tonumber(ARGV[2]), tonumber(ARGV[3])
  if per_day > 0 and d >= per_day then return {0, 'day', d, h} end
  if per_hour > 0 and h >= per_hour then return {0, 'hour', d, h} end
end
d = redis.call('HINCRBY', KEYS[1], a, 1)
h = redis.call('HINCRBY', KEYS[2], a, 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
return {1, d, h}
"""


class BudgetCounter:
    """Atomic spend / refund of one impression against an action's day and hour caps."""

    def __init__(self, client: Any, ttl_s: int = BUDGET_TTL_S) -> None:
        self._client = client
        self._script = client.register_script(BUDGET_LUA)
        self._ttl = ttl_s

    async def take(self, action_id: str, per_day: int, per_hour: int, now_ms: int, *,
                   enforce: bool = True) -> Verdict | None:
        """Spend one impression; the refusing verdict (nothing spent) when a cap is reached."""
        reply = await self._script(
            keys=list(budget_keys(now_ms)),
            args=[action_id, per_day, per_hour, self._ttl, "take" if enforce else "spend"],
        )
        if int(reply[0]) == 1:
            return None
        if _text(reply[1]) == "day":
            return Verdict(VerdictCode.BUDGET_DAY, now_ms - now_ms % DAY_MS + DAY_MS)
        return Verdict(VerdictCode.BUDGET_HOUR, now_ms - now_ms % HOUR_MS + HOUR_MS)

    async def give_back(self, action_id: str, now_ms: int) -> None:
        await self._script(keys=list(budget_keys(now_ms)),
                           args=[action_id, 0, 0, self._ttl, "give"])

    async def usage(self, action_id: str, now_ms: int) -> BudgetUsage:
        day, hour = budget_keys(now_ms)
        pipe = self._client.pipeline(transaction=False)
        pipe.hget(day, action_id)
        pipe.hget(hour, action_id)
        d, h = await pipe.execute()
        return BudgetUsage(int(d or 0), int(h or 0))


def _text(x: object) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
