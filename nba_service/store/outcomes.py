"""Outcome recording: exactly once per client event_id, atomically with the contact history.

The dedupe marker and the history live under the customer's hash tag, so one Lua script can
touch both atomically, on a single node and on Redis Cluster alike.
"""

from __future__ import annotations

from typing import Any

from nba_service.store.keys import history_key

# KEYS[1] = dedupe marker, KEYS[2] = contact history hash
# ARGV = action_id, outcome, ts_ms, value, dedupe_ttl_s
# History fields: "<action>|<outcome>|n" (count), "<action>|<outcome>|t" (last time, ms),
# "<action>|value" (summed outcome value).
_RECORD = """
if redis.call('SET', KEYS[1], ARGV[3], 'NX', 'EX', tonumber(ARGV[5])) == false then
  return 0
end
local base = ARGV[1] .. '|' .. ARGV[2]
redis.call('HINCRBY', KEYS[2], base .. '|n', 1)
redis.call('HSET', KEYS[2], base .. '|t', ARGV[3])
if tonumber(ARGV[4]) ~= 0 then
  redis.call('HINCRBYFLOAT', KEYS[2], ARGV[1] .. '|value', ARGV[4])
end
return 1
"""

DEDUPE_WINDOW_S = 7 * 86400
"""An event_id is remembered for this long; a replay inside the window changes nothing."""


def event_key(customer_id: str, event_id: str) -> str:
    return f"nba:{{c:{customer_id}}}:e:{event_id}"


class OutcomeWriter:
    def __init__(self, client: Any, dedupe_window_s: int = DEDUPE_WINDOW_S) -> None:
        self._script = client.register_script(_RECORD)
        self._window = dedupe_window_s

    async def record(
        self,
        customer_id: str,
        action_id: str,
        outcome: str,
        event_id: str,
        ts_ms: int,
        value: float,
    ) -> bool:
        """True if applied now; False if this event_id was already applied inside the window."""
        applied = await self._script(
            keys=[event_key(customer_id, event_id), history_key(customer_id)],
            args=[action_id, outcome, ts_ms, repr(float(value)), self._window],
        )
        return bool(applied)
