"""Outcome recording: exactly once per client event_id, atomically with the contact history.

The dedupe marker, the decision record and the history live under the customer's hash tag,
so one Lua script checks and changes all of them atomically, on a single node and on Redis
Cluster alike. An IMPRESSION is also an admission ticket: the script records it only when the
action's contact policies allow showing it at the impression's time (docs/contact-policies.md),
so N concurrent impressions against a cap of K admit exactly K. A budgeted action's impression
first takes one unit of the action's budget (a key in another slot) and gives it back when
the customer script does not apply the impression.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nba_service.engine.policies import DAY_MS, AdmissionParams, Verdict, VerdictCode
from nba_service.errors import NotFound, ResourceExhausted
from nba_service.store.keys import history_key
from nba_service.store.policies import BudgetCounter, decision_key

__all__ = ["DEDUPE_WINDOW_S", "HISTORY_TTL_S", "RECORD_OUTCOME_LUA", "OutcomeResult",
           "OutcomeStatus", "OutcomeWriter", "event_key", "raise_for_outcome"]

# KEYS[1] = dedupe marker, KEYS[2] = contact history hash, KEYS[3] = decision record
# ARGV[1..7]  = action_id, outcome, ts_ms, value, dedupe_ttl_s, decision_id ('' = none), channel
# ARGV[8..16] = enforce (0/1), max_impressions, window_ms, max_per_channel, suppress_ms,
#               stop_after_accept (0/1), cooldown_ms, channel_max_contacts, channel_cooldown_ms
# ARGV[17..21] = keep, horizon_ms, contacts_keep, contacts_horizon_ms, history_ttl_ms (0 = none)
# ARGV[22] = day_ms
# Returns {1} applied, {0, marker} duplicate event_id, {-1} unknown decision, {-2} action not
# served in that decision, {-3, code, until_ms} impression refused by a contact policy (nothing
# written).
# The checks mirror nba_service.engine.policies.contact_verdict, in the same order.
RECORD_OUTCOME_LUA = """
local seen = redis.call('GET', KEYS[1])
if seen then return {0, seen} end
local a, outcome, ch = ARGV[1], ARGV[2], ARGV[7]
if ARGV[6] ~= '' then
  if redis.call('EXISTS', KEYS[3]) == 0 then return {-1} end
  if redis.call('HEXISTS', KEYS[3], a) == 0 then return {-2} end
end
local h = KEYS[2]
local t = tonumber(ARGV[3])
local function list(field)
  local out = {}
  local s = redis.call('HGET', h, field)
  if s then for x in string.gmatch(s, '[^,]+') do out[#out + 1] = tonumber(x) end end
  return out
end
-- nil when fewer than cap of the ascending times are > t - window, else when that lifts
local function capped(times, cap, window)
  local n = #times
  local k = n
  while k > 0 and times[k] > t - window do k = k - 1 end
  local c = n - k
  if c < cap then return nil end
  return times[k + 1 + c - cap] + window
end
-- insert t, drop times <= t - horizon (horizon > 0), keep the newest `keep`
local function push(times, keep, horizon)
  local pos = #times + 1
  while pos > 1 and times[pos - 1] > t do pos = pos - 1 end
  table.insert(times, pos, t)
  local first = 1
  if horizon > 0 then
    while times[first] <= t - horizon do first = first + 1 end
  end
  if #times - keep + 1 > first then first = #times - keep + 1 end
  local parts = {}
  for i = first, #times do parts[#parts + 1] = string.format('%.0f', times[i]) end
  return table.concat(parts, ',')
end
if outcome == 'impression' then
  local enforce = ARGV[8] == '1'
  local K, W, Kc = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
  local D, C = tonumber(ARGV[12]), tonumber(ARGV[14])
  local M, CC = tonumber(ARGV[15]), tonumber(ARGV[16])
  local imp_f, ch_f, k_f = '#i|' .. a, '#ic|' .. a .. '|' .. ch, '#k|' .. ch
  local imps = list(imp_f)
  local chimps = (Kc > 0 and ch ~= '') and list(ch_f) or nil
  local contacts = (enforce and ch ~= '') and list(k_f) or nil
  if enforce then
    if ARGV[13] == '1' and redis.call('HEXISTS', h, '#a|' .. a) == 1 then
      return {-3, 'accepted', -1}
    end
    if D > 0 then
      local r = tonumber(redis.call('HGET', h, '#r|' .. a))
      if r and t < r + D then return {-3, 'rejected', r + D} end
    end
    if W > 0 and K > 0 then
      local u = capped(imps, K, W)
      if u then return {-3, 'max_impressions', u} end
    end
    if W > 0 and chimps then
      local u = capped(chimps, Kc, W)
      if u then return {-3, 'max_impressions_channel', u} end
    end
    if C > 0 and #imps > 0 and t < imps[#imps] + C then
      return {-3, 'cooldown', imps[#imps] + C}
    end
    if contacts and M > 0 then
      local u = capped(contacts, M, tonumber(ARGV[22]))
      if u then return {-3, 'channel_max_contacts', u} end
    end
    if contacts and CC > 0 and #contacts > 0 and t < contacts[#contacts] + CC then
      return {-3, 'channel_cooldown', contacts[#contacts] + CC}
    end
  end
  redis.call('HSET', h, imp_f, push(imps, tonumber(ARGV[17]), tonumber(ARGV[18])))
  if chimps then redis.call('HSET', h, ch_f, push(chimps, Kc, W)) end
  if contacts then
    redis.call('HSET', h, k_f, push(contacts, tonumber(ARGV[19]), tonumber(ARGV[20])))
  end
elseif outcome == 'reject' then
  local r = tonumber(redis.call('HGET', h, '#r|' .. a))
  if r == nil or t > r then redis.call('HSET', h, '#r|' .. a, ARGV[3]) end
elseif outcome == 'accept' then
  local x = tonumber(redis.call('HGET', h, '#a|' .. a))
  if x == nil or t < x then redis.call('HSET', h, '#a|' .. a, ARGV[3]) end
end
local base = a .. '|' .. outcome
redis.call('HINCRBY', h, base .. '|n', 1)
redis.call('HSET', h, base .. '|t', ARGV[3])
if ch ~= '' then redis.call('HSET', h, base .. '|c', ch) end
if tonumber(ARGV[4]) ~= 0 then
  redis.call('HINCRBYFLOAT', h, a .. '|value', ARGV[4])
end
if tonumber(ARGV[21]) > 0 then redis.call('PEXPIRE', h, tonumber(ARGV[21])) end
-- 'p' + time: applied, not yet in the outcome stream (OutcomeWriter.mark_logged)
redis.call('SET', KEYS[1], 'p' .. ARGV[3], 'EX', tonumber(ARGV[5]))
return {1}
"""

DEDUPE_WINDOW_S = 7 * 86400
"""An event_id is remembered for this long; a replay inside the window changes nothing."""

HISTORY_TTL_S = 400 * 86400
"""A customer's contact history expires this long after their last recorded outcome."""

_NO_POLICY = AdmissionParams(enforce=False)


class OutcomeStatus(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this event_id was already applied inside the dedupe window
    UNKNOWN_DECISION = "unknown_decision"  # decision_id unknown or expired
    NOT_SERVED = "not_served"  # the action was not served in that decision
    REFUSED = "refused"  # an impression a contact policy or budget did not admit


@dataclass(frozen=True, slots=True)
class OutcomeResult:
    status: OutcomeStatus
    verdict: Verdict | None = None  # why a REFUSED impression was not admitted
    # DUPLICATE of an outcome applied at this time whose outcome-log append was never confirmed
    # (the process died or the store failed in between): the replay appends it.
    unlogged_ts_ms: int | None = None

    @property
    def applied(self) -> bool:
        return self.status is OutcomeStatus.APPLIED


def event_key(customer_id: str, event_id: str) -> str:
    return f"nba:{{c:{customer_id}}}:e:{event_id}"


def _duplicate(marker: object) -> OutcomeResult:
    text = _text(marker) if marker is not None else ""
    unlogged = int(text[1:]) if text.startswith("p") and text[1:].isdigit() else None
    return OutcomeResult(OutcomeStatus.DUPLICATE, unlogged_ts_ms=unlogged)


def _text(x: object) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class OutcomeWriter:
    def __init__(self, client: Any, dedupe_window_s: int = DEDUPE_WINDOW_S,
                 history_ttl_s: int = HISTORY_TTL_S) -> None:
        self._client = client
        self._script = client.register_script(RECORD_OUTCOME_LUA)
        self._budgets = BudgetCounter(client)
        self._window = dedupe_window_s
        self._history_ttl_ms = history_ttl_s * 1000

    def script_call(
        self,
        customer_id: str,
        action_id: str,
        outcome: str,
        event_id: str,
        ts_ms: int,
        value: float,
        *,
        channel: str = "",
        decision_id: str = "",
        params: AdmissionParams = _NO_POLICY,
    ) -> tuple[list[str], list[str | int]]:
        """KEYS and ARGV of the customer script (also used by tests with a sync client)."""
        p = params
        keys = [event_key(customer_id, event_id), history_key(customer_id),
                decision_key(customer_id, decision_id)]
        args: list[str | int] = [
            action_id, outcome, ts_ms, repr(float(value)), self._window, decision_id, channel,
            int(p.enforce), p.max_impressions, p.window_ms, p.max_per_channel, p.suppress_ms,
            int(p.stop_after_accept), p.cooldown_ms, p.channel_max_contacts,
            p.channel_cooldown_ms, p.keep, p.horizon_ms, p.contacts_keep,
            p.contacts_horizon_ms, self._history_ttl_ms, DAY_MS,
        ]
        return keys, args

    @staticmethod
    def decode(reply: Any) -> OutcomeResult:
        code = int(reply[0])
        if code == 1:
            return OutcomeResult(OutcomeStatus.APPLIED)
        if code == 0:
            return _duplicate(reply[1] if len(reply) > 1 else None)
        if code == -1:
            return OutcomeResult(OutcomeStatus.UNKNOWN_DECISION)
        if code == -2:
            return OutcomeResult(OutcomeStatus.NOT_SERVED)
        return OutcomeResult(OutcomeStatus.REFUSED,
                             Verdict(VerdictCode(_text(reply[1])), int(reply[2])))

    async def mark_logged(self, customer_id: str, event_id: str) -> None:
        """The outcome is in the outcome stream: a replay of its event_id appends nothing."""
        await self._client.set(event_key(customer_id, event_id), "logged", xx=True, keepttl=True)

    async def record(
        self,
        customer_id: str,
        action_id: str,
        outcome: str,
        event_id: str,
        ts_ms: int,
        value: float,
        *,
        channel: str = "",
        decision_id: str = "",
        params: AdmissionParams = _NO_POLICY,
    ) -> OutcomeResult:
        """Apply one outcome; see `OutcomeStatus` for what can come back. `ts_ms` is "now" for
        the admission of an impression and the time recorded in the history."""
        keys, args = self.script_call(customer_id, action_id, outcome, event_id, ts_ms, value,
                                      channel=channel, decision_id=decision_id, params=params)
        if outcome != "impression" or not params.has_budget:
            return self.decode(await self._script(keys=keys, args=args))
        # The budget key lives in the action's slot, not the customer's: take the budget first
        # and give it back unless the customer script applies the impression, so a failure in
        # between can only under-spend a budget, never overspend it. A replay is answered
        # before touching the budget, so a retry never spends or is refused twice.
        seen = await self._client.get(keys[0])
        if seen is not None:
            return _duplicate(seen)
        refused = await self._budgets.take(action_id, params.per_day, params.per_hour, ts_ms,
                                           enforce=params.enforce)
        if refused is not None:
            return OutcomeResult(OutcomeStatus.REFUSED, refused)
        try:
            result = self.decode(await self._script(keys=keys, args=args))
        except BaseException:
            await self._budgets.give_back(action_id, ts_ms)
            raise
        if not result.applied:
            await self._budgets.give_back(action_id, ts_ms)
        return result


def raise_for_outcome(
    result: OutcomeResult,
    customer_id: str,
    action_id: str,
    decision_id: str,
    describe: Callable[[Verdict, int, str | None], str],
    action_index: int,
    channel: str | None,
) -> None:
    """The client error of an outcome that changed nothing for a reason other than a replay."""
    if result.status is OutcomeStatus.UNKNOWN_DECISION:
        raise NotFound(f"decision_id: unknown or expired decision {decision_id!r} for customer "
                       f"{customer_id!r}")
    if result.status is OutcomeStatus.NOT_SERVED:
        raise NotFound(f"action_id: {action_id!r} was not served in decision {decision_id!r}")
    if result.status is OutcomeStatus.REFUSED and result.verdict is not None:
        v = result.verdict
        raise ResourceExhausted(
            f"impression of {action_id!r} not admitted: {v.code.stage.name}: "
            f"{describe(v, action_index, channel)}"
        )
