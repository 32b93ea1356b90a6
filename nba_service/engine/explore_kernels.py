"""Numba kernels of exploration: slot-wise epsilon-greedy and Thompson slates with group limits.

Candidates arrive in greedy order (index 0 has the highest priority), so "the top remaining"
is the first admissible index. A candidate is admissible in a slot when it was not picked yet
and its group has fewer than `max_per_group` picks (0 = no limit), the same diversity rule as
the decision kernel.
"""

from __future__ import annotations

import numpy as np

from nba_service.engine.kernel import _jit


@_jit
def epsilon_select(group: np.ndarray, n_groups: int, max_per_group: int, k: int, eps: float,
                   u: np.ndarray, r: np.ndarray, picks: np.ndarray, greedy: np.ndarray,
                   prob: np.ndarray) -> int:
    """Fill up to `k` slots; returns how many were filled.

    Slot j: with m admissible candidates, pick the top one when u[j] < 1 - eps, else the
    floor(r[j] * m)-th admissible one. prob[j] is then exactly P(this pick | earlier picks):
    1 - eps + eps / m for the top one, eps / m for any other. eps = 1 is a uniform random slate.
    """
    n = group.shape[0]
    taken = np.zeros(n, dtype=np.bool_)
    per_group = np.zeros(n_groups, dtype=np.int64)
    filled = 0
    for j in range(k):
        m = 0
        first = -1
        for e in range(n):
            if taken[e] or (max_per_group > 0 and per_group[group[e]] >= max_per_group):
                continue
            if first < 0:
                first = e
            m += 1
        if m == 0:
            break
        pick = first
        if u[j] >= 1.0 - eps:
            target = min(int(r[j] * m), m - 1)
            seen = 0
            for e in range(n):
                if taken[e] or (max_per_group > 0 and per_group[group[e]] >= max_per_group):
                    continue
                if seen == target:
                    pick = e
                    break
                seen += 1
        picks[j] = pick
        greedy[j] = pick == first
        prob[j] = eps / m + ((1.0 - eps) if pick == first else 0.0)
        taken[pick] = True
        per_group[group[pick]] += 1
        filled += 1
    return filled


@_jit
def thompson_select(scores: np.ndarray, group: np.ndarray, n_groups: int, max_per_group: int,
                    k: int, picks: np.ndarray, greedy: np.ndarray, prob: np.ndarray) -> int:
    """Slates of every draw (row) of sampled priorities; row 0 is the one served.

    Returns how many slots row 0 filled. prob[j] estimates P(slot j's pick | earlier picks) as
    (#rows agreeing with row 0 on slots 0..j) / (#rows agreeing on slots 0..j-1), so the
    product over slots is the share of rows that produced the served slate prefix. Row 0 is
    counted, so no estimate is ever 0.
    """
    d_n, n = scores.shape
    taken = np.zeros(n, dtype=np.bool_)
    per_group = np.zeros(n_groups, dtype=np.int64)
    agree = np.ones(d_n, dtype=np.bool_)
    row_picks = np.full((d_n, k), -1, dtype=np.int64)
    for d in range(d_n):
        taken[:] = False
        per_group[:] = 0
        for j in range(k):
            best = -1
            first = -1
            best_s = 0.0
            for e in range(n):
                if taken[e] or (max_per_group > 0 and per_group[group[e]] >= max_per_group):
                    continue
                if first < 0:
                    first = e
                s = scores[d, e]
                # Strict '>' keeps the earlier (greedier) candidate on ties.
                if best < 0 or s > best_s:
                    best = e
                    best_s = s
            if best < 0:
                break
            row_picks[d, j] = best
            if d == 0:
                greedy[j] = best == first
            taken[best] = True
            per_group[group[best]] += 1
    filled = 0
    prev = d_n
    for j in range(k):
        if row_picks[0, j] < 0:
            break
        picks[j] = row_picks[0, j]
        count = 0
        for d in range(d_n):
            if agree[d] and row_picks[d, j] == row_picks[0, j]:
                count += 1
            else:
                agree[d] = False
        prob[j] = count / prev
        prev = count
        filled += 1
    return filled


def warm_up() -> None:
    """Compile (or load from cache) both kernels with the dtypes used at request time."""
    group = np.zeros(2, dtype=np.int32)
    picks = np.zeros(2, dtype=np.int64)
    greedy = np.zeros(2, dtype=np.bool_)
    prob = np.zeros(2, dtype=np.float64)
    epsilon_select(group, 1, 0, 2, 0.1, np.zeros(2), np.zeros(2), picks, greedy, prob)
    thompson_select(np.zeros((3, 2)), group, 1, 0, 2, picks, greedy, prob)


def compiled_specialisations() -> int:
    """Type specialisations of both kernels (stays 2 when requests never compile)."""
    return sum(len(getattr(f, "signatures", ())) for f in (epsilon_select, thompson_select))
