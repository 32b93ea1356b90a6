"""Numba kernels: the rule VM and the one-call decision kernel (filters + arbitration + top-k).

Everything here takes plain numpy arrays with fixed dtypes (see `warm_up`): a call with other
dtypes or a read-only array would compile a new specialisation inside a request, so the Python
wrapper (`arbitration.Engine`) always converts its inputs first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
from numba import njit

from nba_service.engine.reasons import Stage
from nba_service.engine.rules import Op

F = TypeVar("F", bound=Callable[..., Any])


def _jit(fn: F) -> F:
    """`njit(cache=True)`, or plain `njit` when no cache directory is writable.

    Numba picks the cache location when the function is decorated and raises if neither the
    package's __pycache__ nor the user cache dir (NUMBA_CACHE_DIR) can be written; a read-only
    install must still work, only with a slower first start.
    """
    try:
        return cast(F, njit(cache=True)(fn))
    except RuntimeError:
        return cast(F, njit(cache=False)(fn))


# Numba freezes module globals as compile-time constants, so named opcodes cost nothing.
CONST, LOAD, ADD, SUB, MUL, DIV, NEG = (int(Op.CONST), int(Op.LOAD), int(Op.ADD), int(Op.SUB),
                                       int(Op.MUL), int(Op.DIV), int(Op.NEG))
EQ, NE, LT, LE, GT, GE = int(Op.EQ), int(Op.NE), int(Op.LT), int(Op.LE), int(Op.GT), int(Op.GE)
AND, OR, NOT = int(Op.AND), int(Op.OR), int(Op.NOT)
MIN, MAX, ABS, PRESENT, MISSING = (int(Op.MIN), int(Op.MAX), int(Op.ABS), int(Op.PRESENT),
                                   int(Op.MISSING))
IN, NOT_IN = int(Op.IN), int(Op.NOT_IN)

S_CHANNEL = int(Stage.CHANNEL_NOT_ALLOWED)
S_VALIDITY = int(Stage.OUTSIDE_VALIDITY)
S_ELIGIBILITY = int(Stage.RULE_ELIGIBILITY)
S_SBS = int(Stage.SERVICE_BEFORE_SALES)
S_VALUE = int(Stage.VALUE_UNAVAILABLE)
S_PROPENSITY = int(Stage.INVALID_PROPENSITY)
S_GROUP = int(Stage.GROUP_LIMIT)
S_CUTOFF = int(Stage.RANK_CUTOFF)
BAD_CANDIDATE, BAD_BLOCK = -1, -2  # `decide`'s refusals of its inputs


@_jit
def eval_program(ops: np.ndarray, args: np.ndarray, consts: np.ndarray, sets: np.ndarray,
                 start: int, end: int, row: np.ndarray, stack: np.ndarray) -> float:
    """Run one postfix program; NaN is "unknown" (three-valued logic, docs/catalog.md)."""
    sp = 0
    for pc in range(start, end):
        op = ops[pc]
        if op == CONST:
            stack[sp] = consts[pc]
            sp += 1
        elif op == LOAD:
            stack[sp] = row[args[pc]]
            sp += 1
        elif op == NEG:
            stack[sp - 1] = -stack[sp - 1]
        elif op == NOT:
            x = stack[sp - 1]
            stack[sp - 1] = x if math.isnan(x) else (1.0 if x == 0.0 else 0.0)
        elif op == ABS:
            stack[sp - 1] = abs(stack[sp - 1])
        elif op == PRESENT:
            stack[sp - 1] = 0.0 if math.isnan(stack[sp - 1]) else 1.0
        elif op == MISSING:
            stack[sp - 1] = 1.0 if math.isnan(stack[sp - 1]) else 0.0
        elif op in (IN, NOT_IN):
            x = stack[sp - 1]
            if not math.isnan(x):
                found = 0.0
                base = args[pc]
                for k in range(base, base + int(consts[pc])):
                    if sets[k] == x:
                        found = 1.0
                        break
                stack[sp - 1] = found if op == IN else 1.0 - found
        else:
            b = stack[sp - 1]
            a = stack[sp - 2]
            sp -= 1
            if op == AND:
                if a == 0.0 or b == 0.0:
                    r = 0.0
                elif math.isnan(a) or math.isnan(b):
                    r = math.nan
                else:
                    r = 1.0
            elif op == OR:
                if (a != 0.0 and not math.isnan(a)) or (b != 0.0 and not math.isnan(b)):
                    r = 1.0
                elif math.isnan(a) or math.isnan(b):
                    r = math.nan
                else:
                    r = 0.0
            elif op == ADD:
                r = a + b
            elif op == SUB:
                r = a - b
            elif op == MUL:
                r = a * b
            elif op == DIV:
                r = math.nan if b == 0.0 else a / b
            elif math.isnan(a) or math.isnan(b):
                r = math.nan  # comparisons, min and max with a missing operand are unknown
            elif op == EQ:
                r = 1.0 if a == b else 0.0
            elif op == NE:
                r = 1.0 if a != b else 0.0
            elif op == LT:
                r = 1.0 if a < b else 0.0
            elif op == LE:
                r = 1.0 if a <= b else 0.0
            elif op == GT:
                r = 1.0 if a > b else 0.0
            elif op == GE:
                r = 1.0 if a >= b else 0.0
            elif op == MIN:
                r = a if a <= b else b
            else:  # MAX
                r = a if a >= b else b
            stack[sp - 1] = r
    return float(stack[0])


@_jit
def eval_programs(ops: np.ndarray, args: np.ndarray, consts: np.ndarray, sets: np.ndarray,
                  spans: np.ndarray, rows: np.ndarray, max_stack: int) -> np.ndarray:
    """Evaluate every program (spans: (P, 2) int32) on every row (R, S) -> (R, P) float64."""
    out = np.empty((rows.shape[0], spans.shape[0]))
    stack = np.empty(max_stack)
    for r in range(rows.shape[0]):
        for p in range(spans.shape[0]):
            out[r, p] = eval_program(ops, args, consts, sets, spans[p, 0], spans[p, 1],
                                     rows[r], stack)
    return out


@_jit
def decide(cands: np.ndarray, propensity: np.ndarray, policy_block: np.ndarray,
           lever_scale: np.ndarray, row: np.ndarray,
           now_s: float, channel_code: int, sbs_active: bool, limit: int, max_per_group: int,
           n_groups: int, block_ok: np.ndarray,
           chan_mask: np.ndarray, valid_from: np.ndarray, valid_to: np.ndarray,
           rule_spans: np.ndarray, value_spans: np.ndarray, value_const: np.ndarray,
           lever: np.ndarray, group: np.ndarray, is_sales: np.ndarray, mandatory: np.ndarray,
           cw_off: np.ndarray, cw_slots: np.ndarray, cw_values: np.ndarray,
           cw_weights: np.ndarray,
           ops: np.ndarray, args: np.ndarray, consts: np.ndarray, sets: np.ndarray,
           max_stack: int,
           out_stage: np.ndarray, out_priority: np.ndarray, out_cw: np.ndarray,
           out_value: np.ndarray, out_lever: np.ndarray, out_mandatory: np.ndarray,
           out_served: np.ndarray) -> int:
    """Filter, score and rank the candidates of one request; returns how many were served.

    `cands` are catalog indices; outputs are per candidate position, `out_served` holds the
    served positions in rank order. Components (P, C, V, L) are computed for every candidate,
    removed or not, so explanations can show what a removed action would have scored;
    `lever_scale[i]` (budget pacing) multiplies candidate i's lever. Returns BAD_CANDIDATE or
    BAD_BLOCK, before any work, for a catalog index out of range or a `policy_block` code that
    `block_ok` does not allow.
    """
    n = cands.shape[0]
    for i in range(n):
        if cands[i] < 0 or cands[i] >= chan_mask.shape[0]:
            return BAD_CANDIDATE
        b = policy_block[i]
        if b < 0 or b >= block_ok.shape[0] or not block_ok[b]:
            return BAD_BLOCK
    stack = np.empty(max_stack)
    chbit = np.int64(1) << np.int64(channel_code)
    n_ok = 0
    for i in range(n):
        a = cands[i]
        cw_sum = 0.0
        for j in range(cw_off[a], cw_off[a + 1]):
            if row[cw_slots[j]] == cw_values[j]:
                cw_sum += cw_weights[j]
        cw = max(1.0 + cw_sum / 100.0, 0.0)
        vs = value_spans[a, 0]
        ve = value_spans[a, 1]
        v = value_const[a] if vs == ve else eval_program(ops, args, consts, sets, vs, ve, row,
                                                         stack)
        p = propensity[i]
        lv = lever[a] * lever_scale[i]
        pr = p * cw * v * lv
        out_cw[i] = cw
        out_value[i] = v
        out_lever[i] = lv
        out_priority[i] = pr
        out_mandatory[i] = mandatory[a]

        stage = 0
        if (chan_mask[a] & chbit) == 0:
            stage = S_CHANNEL
        elif not (valid_from[a] <= now_s < valid_to[a]):
            stage = S_VALIDITY
        else:
            for k in range(3):
                s = rule_spans[a, k, 0]
                e = rule_spans[a, k, 1]
                if s < e:
                    r = eval_program(ops, args, consts, sets, s, e, row, stack)
                    if math.isnan(r) or r == 0.0:
                        stage = S_ELIGIBILITY + k
                        break
        if stage == 0 and policy_block[i] != 0:
            stage = policy_block[i]
        if stage == 0 and sbs_active and is_sales[a]:
            stage = S_SBS
        if stage == 0 and not mandatory[a]:
            if math.isnan(v):
                stage = S_VALUE
            elif math.isnan(p):
                stage = S_PROPENSITY
            elif math.isnan(pr):
                stage = S_VALUE  # e.g. an infinite value times a zero weight
        out_stage[i] = stage
        if stage == 0:
            n_ok += 1

    # Survivors sorted by: mandatory first, then priority descending, then catalog order.
    # Three stable sorts from the least to the most significant key keep ties deterministic.
    surv = np.empty(n_ok, dtype=np.int64)
    m = 0
    for i in range(n):
        if out_stage[i] == 0:
            surv[m] = i
            m += 1
    key = np.empty(n_ok)
    for j in range(n_ok):
        key[j] = cands[surv[j]]
    surv = surv[np.argsort(key, kind="mergesort")]
    for j in range(n_ok):
        i = surv[j]
        key[j] = 0.0 if mandatory[cands[i]] else -out_priority[i]
    surv = surv[np.argsort(key, kind="mergesort")]
    for j in range(n_ok):
        key[j] = 0.0 if mandatory[cands[surv[j]]] else 1.0
    surv = surv[np.argsort(key, kind="mergesort")]

    per_group = np.zeros(n_groups, dtype=np.int64)
    served = 0
    for j in range(n_ok):
        i = surv[j]
        a = cands[i]
        if mandatory[a]:
            pass
        elif max_per_group > 0 and per_group[group[a]] >= max_per_group:
            out_stage[i] = S_GROUP
            continue
        if served < limit:
            out_served[served] = i
            served += 1
            if not mandatory[a]:
                per_group[group[a]] += 1
        else:
            out_stage[i] = S_CUTOFF
    return served


def warm_up() -> None:
    """Compile (or load from cache) every kernel with the dtypes used at request time."""
    i32, i64, f64 = np.int32, np.int64, np.float64
    ops = np.array([Op.LOAD, Op.CONST, Op.GE], dtype=i32)
    args = np.array([0, 0, 0], dtype=i32)
    consts = np.array([0.0, 1.0, 0.0], dtype=f64)
    sets = np.array([0.0], dtype=f64)
    row = np.array([2.0, 0.0], dtype=f64)
    eval_programs(ops, args, consts, sets, np.array([[0, 3]], dtype=i32), row[None, :], 4)
    n = 1
    out_stage = np.zeros(n, dtype=i32)
    out = [np.zeros(n, dtype=f64) for _ in range(4)]
    decide(
        np.zeros(n, dtype=i64), np.full(n, 0.5), np.zeros(n, dtype=i32), np.ones(n), row, 0.0,
        0, False, 1, 0, 1, np.ones(1, dtype=np.bool_),
        np.ones(1, dtype=i64), np.full(1, -np.inf), np.full(1, np.inf),
        np.array([[[0, 3], [0, 0], [0, 0]]], dtype=i32), np.zeros((1, 2), dtype=i32),
        np.ones(1), np.ones(1), np.zeros(1, dtype=i32), np.zeros(1, dtype=np.bool_),
        np.zeros(1, dtype=np.bool_),
        np.zeros(2, dtype=i32), np.zeros(0, dtype=i32), np.zeros(0, dtype=f64),
        np.zeros(0, dtype=f64),
        ops, args, consts, sets, 4,
        out_stage, out[0], out[1], out[2], out[3], np.zeros(n, dtype=np.bool_),
        np.zeros(n, dtype=i64),
    )


def compiled_specialisations() -> int:
    """How many type specialisations of `decide` exist (stays 1 if requests never compile)."""
    return len(getattr(decide, "signatures", ()))
