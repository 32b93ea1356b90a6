"""The policy pass of one decision as one Numba call, straight from the store's replies.

`scan` reads the customer's history hash and the two budget hashes as their HGETALL replies
joined into byte buffers (fields and values each separated by `\\n`; see
`nba_service.store.policies` for the field format), and returns per candidate the Stage that
removes it, the verdict code, until when, and the pacing lever. It computes exactly what
`parse_history` + `PolicyTable.evaluate` compute in Python, which stays the reference: a
Hypothesis differential test holds the two equal on well-formed and garbage hashes alike.

Numbers are decimal integers of at most 18 digits with an optional '-' (the store writes
nothing else); a field whose value is not (a comma-separated list of) such numbers counts as
absent, a budget counter as 0, as in the reference. `warm_up` compiles with the request-time
dtypes when a catalog is loaded, so no request pays for JIT.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from nba_service.engine.kernel import _jit
from nba_service.engine.reasons import Stage

# Verdict codes: 0 = allowed, else 1 + the position of the member in `VerdictCode`.
V_ACCEPTED, V_REJECTED, V_MAX_IMP, V_MAX_IMP_CH, V_COOLDOWN = 1, 2, 3, 4, 5
V_CH_MAX, V_CH_COOLDOWN, V_BUDGET_DAY, V_BUDGET_HOUR = 6, 7, 8, 9
FOREVER = -1
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
S_CONTACT = int(Stage.CONTACT_POLICY)
S_BUDGET = int(Stage.BUDGET)

# Columns of the per-action policy parameters (int64; -1 = not set).
P_HAS, P_STOP, P_SUPPRESS, P_WINDOW, P_MAX, P_MAX_CH, P_COOLDOWN, P_EXEMPT = range(8)
N_PARAMS = 8
# Columns of the per-action budget parameters (float64; caps 0 = none).
B_DAY, B_HOUR, B_PACING, B_EXPONENT = range(4)

HASH = 35  # '#'
BAR = 124  # '|'
NL = 10  # '\n'
COMMA = 44
MINUS = 45
K_IMP, K_BY_CHANNEL, K_REJECT, K_ACCEPT, K_CONTACTS = 1, 2, 3, 4, 5


@_jit
def _int(buf: bytes, s: int, e: int) -> tuple[bool, int]:
    """buf[s:e] as a number: optional '-', then 1 to 18 ASCII digits; (False, 0) otherwise."""
    neg = s < e and buf[s] == MINUS
    if neg:
        s += 1
    if e - s < 1 or e - s > 18:
        return False, 0
    v = 0
    for k in range(s, e):
        d = buf[k] - 48
        if d < 0 or d > 9:
            return False, 0
        v = v * 10 + d
    return True, -v if neg else v


@_jit
def _times(buf: bytes, s: int, e: int, out: np.ndarray, at: int) -> int:
    """Parse the list buf[s:e] into out[at:]; its length, or -1 when a part is not a number."""
    n = 0
    if s == e:
        return 0
    p = s
    for k in range(s, e + 1):
        if k == e or buf[k] == COMMA:
            ok, v = _int(buf, p, k)
            if not ok:
                return -1
            out[at + n] = v
            n += 1
            p = k + 1
    return n


@_jit
def _cmp(a: bytes, s: int, e: int, b: bytes | np.ndarray, bs: int, be: int) -> int:
    la = e - s
    lb = be - bs
    for k in range(min(la, lb)):
        x = a[s + k]
        y = b[bs + k]
        if x != y:
            return -1 if x < y else 1
    if la == lb:
        return 0
    return -1 if la < lb else 1


FNV_OFFSET = 2166136261
FNV_PRIME = 16777619
MASK32 = 0xFFFFFFFF


@_jit
def _hash(buf: bytes, s: int, e: int) -> int:
    """32-bit FNV-1a of buf[s:e] (`id_hash` is the same in Python)."""
    h = FNV_OFFSET
    for k in range(s, e):
        h = ((h ^ buf[k]) * FNV_PRIME) & MASK32
    return h


def id_hash(raw: bytes) -> int:
    h = FNV_OFFSET
    for b in raw:
        h = ((h ^ b) * FNV_PRIME) & MASK32
    return h


def id_table(ids: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(id_buf, id_off, slots): the ids back to back and an open-addressing table of their
    positions (-1 = empty, at most a quarter full), for `_find`."""
    off = np.zeros(len(ids) + 1, dtype=np.int64)
    off[1:] = np.cumsum([len(b) for b in ids])
    size = 8
    while size < 4 * len(ids):
        size *= 2
    slots = np.full(size, -1, dtype=np.int64)
    for i, raw in enumerate(ids):
        j = id_hash(raw) & (size - 1)
        while slots[j] >= 0:
            j = (j + 1) & (size - 1)
        slots[j] = i
    return np.frombuffer(b"".join(ids), dtype=np.uint8).copy(), off, slots


@_jit
def _find(buf: bytes, s: int, e: int, id_buf: np.ndarray, id_off: np.ndarray,
          slots: np.ndarray) -> int:
    """Position of the id buf[s:e] in the table's ids, -1 when unknown."""
    mask = slots.shape[0] - 1
    j = _hash(buf, s, e) & mask
    while slots[j] >= 0:
        i = slots[j]
        if _cmp(buf, s, e, id_buf, id_off[i], id_off[i + 1]) == 0:
            return i
        j = (j + 1) & mask
    return -1


@_jit
def _kind(buf: bytes, s: int, e: int) -> tuple[int, int]:
    """The policy kind of field buf[s:e] and where its rest starts; (0, 0) for other fields."""
    if e - s < 3 or buf[s] != HASH:
        return 0, 0
    c = buf[s + 1]
    if buf[s + 2] == BAR:
        if c == 105:  # 'i'
            return K_IMP, s + 3
        if c == 114:  # 'r'
            return K_REJECT, s + 3
        if c == 97:  # 'a'
            return K_ACCEPT, s + 3
        if c == 107:  # 'k'
            return K_CONTACTS, s + 3
    elif c == 105 and buf[s + 2] == 99 and e - s >= 4 and buf[s + 3] == BAR:  # '#ic|'
        return K_BY_CHANNEL, s + 4
    return 0, 0


@_jit
def _cap(times: np.ndarray, s: int, e: int, cap: int, window: int, now: int
         ) -> tuple[bool, int]:
    """`_cap_verdict` of policy_rules over times[s:e]: (reached, when the block lifts)."""
    lo = now - window
    k = e
    while k > s and times[k - 1] > lo:
        k -= 1
    if e - k < cap:
        return False, 0
    # Lifts when all but cap-1 of the counted impressions have left the window.
    return True, times[e - cap] + window


@_jit
def _line_end(buf: bytes, start: int) -> int:
    """Where the line starting at `start` ends (its separator, or the end of the buffer)."""
    e = start
    while e < len(buf) and buf[e] != NL:
        e += 1
    return e


@_jit
def _budget_counts(keys: bytes, vals: bytes, m: int, id_buf: np.ndarray,
                   id_off: np.ndarray, slots: np.ndarray, out: np.ndarray) -> bool:
    """Counters by catalog index; False when the buffers do not split into m lines."""
    ks = 0
    vs = 0
    for _ in range(m):
        ke = _line_end(keys, ks)
        ve = _line_end(vals, vs)
        a = _find(keys, ks, ke, id_buf, id_off, slots)
        if a >= 0:
            ok, v = _int(vals, vs, ve)
            out[a] = v if ok else 0
        ks = ke + 1
        vs = ve + 1
    return m == 0 or (ks == len(keys) + 1 and vs == len(vals) + 1)


@_jit
def scan(hkeys: bytes, hvals: bytes, hm: int, dkeys: bytes, dvals: bytes, dm: int,
         rkeys: bytes, rvals: bytes, rm: int,
         cands: np.ndarray, cat2pos: np.ndarray, channel: bytes,
         id_buf: np.ndarray, id_off: np.ndarray, slots: np.ndarray,
         params: np.ndarray, budget: np.ndarray, limits: np.ndarray, now: int,
         out_block: np.ndarray, out_verdict: np.ndarray, out_lever: np.ndarray) -> int:
    """Policy verdicts of `cands` (catalog indices) from the replies; returns how many got a
    pacing multiplier below 1, or -1 when a reply is ambiguous (a `\n` inside a field or
    value: the caller then takes the reference path).

    `cat2pos[a]` is the candidate position of catalog action a (or -1); `limits` holds the
    channel's (has, max contacts / 24 h, cooldown ms), -1 = not set. Outputs per position:
    `out_block` the Stage (0 = allowed), `out_verdict[i]` = (code, until ms), `out_lever`.
    """
    n = cands.shape[0]
    # Every time list is parsed once, into tbuf; spans per candidate position index it
    # (-1 = absent). A value needs a digit and a separator, so tbuf cannot overflow.
    tbuf = np.empty(len(hvals) // 2 + 2, dtype=np.int64)
    tn = 0
    imp = np.full((n, 2), -1, dtype=np.int64)
    ich = np.full((n, 2), -1, dtype=np.int64)
    rej = np.zeros(n, dtype=np.bool_)
    acc = np.zeros(n, dtype=np.bool_)
    rej_ms = np.zeros(n, dtype=np.int64)
    con_s = -1
    con_e = -1
    ks = 0
    vs = 0
    for _ in range(hm):
        ke = _line_end(hkeys, ks)
        ve = _line_end(hvals, vs)
        kind, rs = _kind(hkeys, ks, ke)
        if kind == K_CONTACTS:
            if _cmp(hkeys, rs, ke, channel, 0, len(channel)) == 0:
                c = _times(hvals, vs, ve, tbuf, tn)
                if c >= 0:
                    con_s = tn
                    con_e = tn + c
                    tn += c
        elif kind != 0:
            ae = ke
            if kind == K_BY_CHANNEL:
                ae = ke - 1
                while ae >= rs and hkeys[ae] != BAR:
                    ae -= 1
                if ae < rs or _cmp(hkeys, ae + 1, ke, channel, 0, len(channel)) != 0:
                    ae = -1
            a = -1 if ae < 0 else _find(hkeys, rs, ae, id_buf, id_off, slots)
            i = -1 if a < 0 else cat2pos[a]
            if i >= 0:
                if kind in (K_IMP, K_BY_CHANNEL):
                    c = _times(hvals, vs, ve, tbuf, tn)
                    if c >= 0:
                        span = imp if kind == K_IMP else ich
                        span[i, 0] = tn
                        span[i, 1] = tn + c
                        tn += c
                else:
                    ok, v = _int(hvals, vs, ve)
                    if ok and kind == K_REJECT:
                        rej[i] = True
                        rej_ms[i] = v
                    elif ok:
                        acc[i] = True
        ks = ke + 1
        vs = ve + 1
    if hm and (ks != len(hkeys) + 1 or vs != len(hvals) + 1):
        return -1  # a separator inside a field or value: not ours to guess

    # The channel's own limits: one verdict for every candidate they apply to.
    ch_code = 0
    ch_until = FOREVER
    if limits[0] > 0:
        if con_s < 0:
            con_s = con_e = 0
        if limits[1] >= 0:
            hit, u = _cap(tbuf, con_s, con_e, limits[1], DAY_MS, now)
            if hit:
                ch_code = V_CH_MAX
                ch_until = u
        if ch_code == 0 and limits[2] >= 0 and con_e > con_s:
            u = tbuf[con_e - 1] + limits[2]
            if now < u:
                ch_code = V_CH_COOLDOWN
                ch_until = u

    for i in range(n):
        a = cands[i]
        code = 0
        until = FOREVER
        if params[a, P_HAS] > 0:
            if params[a, P_STOP] > 0 and acc[i]:
                code = V_ACCEPTED
            elif params[a, P_SUPPRESS] >= 0 and rej[i] and now < rej_ms[i] + params[a, P_SUPPRESS]:
                code = V_REJECTED
                until = rej_ms[i] + params[a, P_SUPPRESS]
            else:
                s_i, e_i = (0, 0) if imp[i, 0] < 0 else (imp[i, 0], imp[i, 1])
                if params[a, P_WINDOW] >= 0 and params[a, P_MAX] >= 0:
                    hit, u = _cap(tbuf, s_i, e_i, params[a, P_MAX], params[a, P_WINDOW], now)
                    if hit:
                        code = V_MAX_IMP
                        until = u
                if code == 0 and params[a, P_WINDOW] >= 0 and params[a, P_MAX_CH] >= 0:
                    s_c, e_c = (0, 0) if ich[i, 0] < 0 else (ich[i, 0], ich[i, 1])
                    hit, u = _cap(tbuf, s_c, e_c, params[a, P_MAX_CH], params[a, P_WINDOW],
                                  now)
                    if hit:
                        code = V_MAX_IMP_CH
                        until = u
                if code == 0 and params[a, P_COOLDOWN] >= 0 and e_i > s_i \
                        and now < tbuf[e_i - 1] + params[a, P_COOLDOWN]:
                    code = V_COOLDOWN
                    until = tbuf[e_i - 1] + params[a, P_COOLDOWN]
        if code == 0 and ch_code != 0 and params[a, P_EXEMPT] == 0:
            code = ch_code
            until = ch_until
        out_block[i] = S_CONTACT if code != 0 else 0
        out_verdict[i, 0] = code
        out_verdict[i, 1] = until
        out_lever[i] = 1.0

    # Budgets: day and hour counters of every budgeted action, then caps and pacing.
    has_budget = False
    for i in range(n):
        if budget[cands[i], B_DAY] > 0.0 or budget[cands[i], B_HOUR] > 0.0:
            has_budget = True
            break
    if not has_budget:
        return 0
    n_cat = params.shape[0]
    day_used = np.zeros(n_cat)
    hour_used = np.zeros(n_cat)
    if not (_budget_counts(dkeys, dvals, dm, id_buf, id_off, slots, day_used)
            and _budget_counts(rkeys, rvals, rm, id_buf, id_off, slots, hour_used)):
        return -1
    day_elapsed = (now % DAY_MS) / DAY_MS
    hour_elapsed = (now % HOUR_MS) / HOUR_MS
    paced = 0
    for i in range(n):
        if out_block[i] != 0:
            continue
        a = cands[i]
        cd = budget[a, B_DAY]
        ch = budget[a, B_HOUR]
        if cd <= 0.0 and ch <= 0.0:
            continue
        d = day_used[a]
        h = hour_used[a]
        if cd > 0.0 and d >= cd:
            out_block[i] = S_BUDGET
            out_verdict[i, 0] = V_BUDGET_DAY
            out_verdict[i, 1] = now - now % DAY_MS + DAY_MS
            continue
        if ch > 0.0 and h >= ch:
            out_block[i] = S_BUDGET
            out_verdict[i, 0] = V_BUDGET_HOUR
            out_verdict[i, 1] = now - now % HOUR_MS + HOUR_MS
            continue
        if budget[a, B_PACING] == 0.0:
            continue
        # The arithmetic of policy_kernel.budget_pass, kept here rather than called from there:
        # Numba's cache does not notice when a function in another module changes.
        m = 1.0
        if cd > 0.0:
            x = ((cd - d) / cd) / (1.0 - day_elapsed)
            m = min(m, min(max(x, 0.0), 1.0))
        if ch > 0.0:
            x = ((ch - h) / ch) / (1.0 - hour_elapsed)
            m = min(m, min(max(x, 0.0), 1.0))
        m = m ** budget[a, B_EXPONENT]
        out_lever[i] = m
        if m < 1.0:
            paced += 1
    return paced


Buffers = tuple[bytes, bytes, int]


def buffers(reply: object) -> Buffers | None:
    """An HGETALL reply as (fields, values, count) for `scan`; None when it is not bytes.

    A separator inside a field or value shows in `scan` (the lines do not add up)."""
    if not isinstance(reply, dict):
        # A reply of another shape (an error, a missing hash) reads as empty, as in the
        # reference; another kind of mapping goes the reference way.
        return None if isinstance(reply, Mapping) else _EMPTY
    if not reply:
        return _EMPTY
    try:
        return b"\n".join(reply), b"\n".join(reply.values()), len(reply)
    except TypeError:
        return None


_EMPTY: Buffers = (b"", b"", 0)
