"""Chat state in Redis: session records, live agent capacity per queue and invite holds.

All chat keys share the hash tag `{chat}` so one Lua script can check a session's limits and
take an agent hold in the same atomic step, on a single node and on a Cluster alike. Invite
traffic is bounded by agent capacity and each record is a few fields, so one slot carries it.

Keys (`<q>` a queue name, `<s>` a session id, `<i>` an invite id):

- `nba:{chat}:s:<s>`     hash: invites, last_invite_ms, pending, pending_until, declined_ms,
                         accepted; expires `session_ttl` after the last invite
- `nba:{chat}:q:<q>`     hash: available, busy, updated_ms (the last ReportAgentCapacity)
- `nba:{chat}:h:<q>`     sorted set: invite id -> hold expiry (ms); an unanswered invite keeps
                         an agent reserved until it expires (pruned in the scripts)
- `nba:{chat}:t:<q>`     sorted set: accepted invite id -> expiry (ms); an accepted chat keeps
                         its agent until the next capacity report counts it as busy
- `nba:{chat}:i:<i>`     hash: session, queue, action, customer, status, created_ms
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nba_service.store.online import read_owned

TAG = "{chat}"


def session_key(session_id: str) -> str:
    return f"nba:{TAG}:s:{session_id}"


def queue_key(queue: str) -> str:
    return f"nba:{TAG}:q:{queue}"


def holds_key(queue: str) -> str:
    return f"nba:{TAG}:h:{queue}"


def taken_key(queue: str) -> str:
    return f"nba:{TAG}:t:{queue}"


def invite_key(invite_id: str) -> str:
    return f"nba:{TAG}:i:{invite_id}"


# Free invites of a queue: each free agent not yet holding an accepted chat may carry
# `ratio` outstanding invites; the holds already out are subtracted. Shared by the scripts.
_FREE = """
local function free_of(qkey, hkey, tkey, now, ratio, max_age)
  redis.call('ZREMRANGEBYSCORE', hkey, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', tkey, '-inf', now)
  local q = redis.call('HMGET', qkey, 'available', 'updated_ms')
  local avail = tonumber(q[1])
  if avail == nil then return nil end
  if max_age >= 0 and now - (tonumber(q[2]) or 0) > max_age then return nil end
  local agents = math.max(avail - redis.call('ZCARD', tkey), 0)
  return math.floor(agents * ratio + 1e-9) - redis.call('ZCARD', hkey)
end
"""

# KEYS: session, queue, holds, taken, invite
# ARGV: now_ms, invite_id, hold_ms, max_invites, cooldown_ms, ratio, session_ttl_ms,
#       queue, action, customer, capacity_max_age_ms (-1 = reports never go stale)
# -> {1, free_after} or {0, reason}
INVITE_LUA = _FREE + """
local now = tonumber(ARGV[1])
local s = redis.call('HMGET', KEYS[1], 'invites', 'declined_ms', 'pending', 'pending_until')
local invites = tonumber(s[1]) or 0
if invites >= tonumber(ARGV[4]) then return {0, 'SESSION_INVITE_LIMIT'} end
local declined = tonumber(s[2])
if declined and now - declined < tonumber(ARGV[5]) then return {0, 'DECLINE_COOLDOWN'} end
if s[3] and (tonumber(s[4]) or 0) > now then return {0, 'INVITE_PENDING'} end
local free = free_of(KEYS[2], KEYS[3], KEYS[4], now, tonumber(ARGV[6]), tonumber(ARGV[11]))
if free == nil then return {0, 'CAPACITY_UNKNOWN'} end
if free <= 0 then return {0, 'NO_FREE_AGENT'} end
local until_ms = now + tonumber(ARGV[3])
local ttl = tonumber(ARGV[7])
redis.call('ZADD', KEYS[3], until_ms, ARGV[2])
redis.call('HSET', KEYS[1], 'invites', invites + 1, 'pending', ARGV[2],
           'pending_until', until_ms, 'last_invite_ms', now)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('HSET', KEYS[5], 'session', KEYS[1], 'queue', ARGV[8], 'action', ARGV[9],
           'customer', ARGV[10], 'status', 'pending', 'created_ms', now)
redis.call('PEXPIRE', KEYS[5], ttl)
return {1, free - 1}
"""

# KEYS: invite, session, holds, taken.  ARGV: now_ms, invite_id, outcome, action, taken_ms
# outcome: accept | decline.  Settles a pending invite once; replays and late answers to a
# settled invite change nothing. -> the invite's status after the call, or 'unknown'.
OUTCOME_LUA = """
local inv = redis.call('HMGET', KEYS[1], 'status', 'action')
if not inv[1] then return 'unknown' end
if inv[2] ~= ARGV[4] then return 'action_mismatch' end
if inv[1] ~= 'pending' then return inv[1] end
local now = tonumber(ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[2])
local status
if ARGV[3] == 'accept' then
  status = 'accepted'
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[5]), ARGV[2])
  redis.call('HSET', KEYS[2], 'accepted', ARGV[2])
else
  status = 'declined'
  redis.call('HSET', KEYS[2], 'declined_ms', now)
end
redis.call('HSET', KEYS[1], 'status', status)
if redis.call('HGET', KEYS[2], 'pending') == ARGV[2] then
  redis.call('HDEL', KEYS[2], 'pending', 'pending_until')
end
return status
"""

# KEYS: queue, holds, taken.  ARGV: now_ms, available, busy, ratio
# A report counts accepted chats as busy, so the accepted-but-unreported set starts over.
CAPACITY_LUA = _FREE + """
local now = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'available', ARGV[2], 'busy', ARGV[3], 'updated_ms', now)
redis.call('DEL', KEYS[3])
return free_of(KEYS[1], KEYS[2], KEYS[3], now, tonumber(ARGV[4]), -1)
"""


@dataclass(frozen=True)
class SessionState:
    invites: int = 0
    declined_ms: int | None = None
    pending: str | None = None
    pending_until_ms: int = 0

    @classmethod
    def parse(cls, raw: dict[bytes, bytes] | None) -> SessionState:
        if not raw:
            return cls()

        def num(name: bytes) -> int | None:
            v = raw.get(name)
            return None if v is None else int(float(v))

        pending = raw.get(b"pending")
        return cls(
            invites=num(b"invites") or 0,
            declined_ms=num(b"declined_ms"),
            pending=None if pending is None else pending.decode(),
            pending_until_ms=num(b"pending_until") or 0,
        )


@dataclass(frozen=True)
class QueueCapacity:
    """What the read pipeline saw of one queue; `free` None means no usable report."""

    available: int | None
    busy: int | None
    updated_ms: int | None
    holds: int
    taken: int

    def free(self, ratio: float, now_ms: int, max_age_s: float | None) -> int | None:
        if self.available is None or self.updated_ms is None:
            return None
        if max_age_s is not None and now_ms - self.updated_ms > max_age_s * 1000:
            return None
        agents = max(self.available - self.taken, 0)
        return math.floor(agents * ratio + 1e-9) - self.holds


class ChatStore:
    """Builds the chat part of the decision's one read pipeline and runs the chat scripts."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._invite = client.register_script(INVITE_LUA)
        self._outcome = client.register_script(OUTCOME_LUA)
        self._capacity = client.register_script(CAPACITY_LUA)

    @staticmethod
    def read_commands(session_id: str, queues: Sequence[str], now_ms: int) -> list[list[Any]]:
        """Commands for `OnlineStore.fetch(extra=...)`: the session, then 3 per queue."""
        cmds: list[list[Any]] = [["HGETALL", session_key(session_id)]]
        for q in queues:
            cmds.append(["HMGET", queue_key(q), "available", "busy", "updated_ms"])
            # Expired holds are not pruned here (a read never writes); they are not counted.
            cmds.append(["ZCOUNT", holds_key(q), f"({now_ms}", "+inf"])
            cmds.append(["ZCOUNT", taken_key(q), f"({now_ms}", "+inf"])
        return cmds

    async def read(self, session_id: str, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """The same commands in one round trip, when there is no customer to fetch with them,
        checked to answer this request (`read_owned`, keyed on the session's slot)."""
        return await read_owned(self.client, session_key(session_id), commands,
                                what=f"chat session {session_id!r}")

    @staticmethod
    def parse_replies(
        replies: Sequence[Any], queues: Sequence[str]
    ) -> tuple[SessionState, dict[str, QueueCapacity]]:
        session = SessionState.parse(replies[0])
        caps: dict[str, QueueCapacity] = {}
        for i, q in enumerate(queues):
            h, holds, taken = replies[1 + 3 * i: 4 + 3 * i]

            def num(v: bytes | None) -> int | None:
                return None if v is None else int(float(v))

            caps[q] = QueueCapacity(num(h[0]), num(h[1]), num(h[2]), int(holds), int(taken))
        return session, caps

    async def invite(
        self,
        *,
        session_id: str,
        invite_id: str,
        queue: str,
        action: str,
        customer_id: str,
        now_ms: int,
        hold_s: float,
        max_invites: int,
        cooldown_s: float,
        ratio: float,
        session_ttl_s: float,
        capacity_max_age_s: float | None,
    ) -> tuple[bool, str, int]:
        """Atomically re-check the session and take a hold. -> (ok, reason, free after)."""
        reply = await self._invite(
            keys=[session_key(session_id), queue_key(queue), holds_key(queue), taken_key(queue),
                  invite_key(invite_id)],
            args=[now_ms, invite_id, int(hold_s * 1000), max_invites, int(cooldown_s * 1000),
                  repr(float(ratio)), int(session_ttl_s * 1000), queue, action, customer_id,
                  -1 if capacity_max_age_s is None else int(capacity_max_age_s * 1000)],
        )
        ok, detail = int(reply[0]), reply[1]
        if ok:
            return True, "", int(detail)
        return False, detail.decode() if isinstance(detail, bytes) else str(detail), 0

    async def settle(
        self, invite_id: str, queue: str, action: str, accepted: bool, now_ms: int,
        taken_s: float,
    ) -> str:
        """Accept or decline a pending invite; -> its status ('unknown' if never issued)."""
        session = await self.session_of(invite_id)
        if session is None:
            return "unknown"
        reply = await self._outcome(
            keys=[invite_key(invite_id), session, holds_key(queue), taken_key(queue)],
            args=[now_ms, invite_id, "accept" if accepted else "decline", action,
                  int(taken_s * 1000)],
        )
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    async def status(self, invite_id: str, action: str) -> str:
        """An invite's status without changing it ('unknown', 'action_mismatch', ...)."""
        status, inv_action = await self.client.hmget(invite_key(invite_id), "status", "action")
        if status is None:
            return "unknown"
        if inv_action is None or inv_action.decode() != action:
            return "action_mismatch"
        return str(status.decode())

    async def session_of(self, invite_id: str) -> str | None:
        """The session key an invite belongs to (the outcome script needs it as a key)."""
        raw = await self.client.hget(invite_key(invite_id), "session")
        return None if raw is None else raw.decode()

    async def report_capacity(
        self, queue: str, available: int, busy: int, ratio: float, now_ms: int
    ) -> int:
        free = await self._capacity(
            keys=[queue_key(queue), holds_key(queue), taken_key(queue)],
            args=[now_ms, available, busy, repr(float(ratio))],
        )
        return int(free)
