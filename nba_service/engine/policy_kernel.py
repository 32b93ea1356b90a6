"""The budget pass of a decision as one Numba call: caps and pacing for every budgeted candidate.

Same arithmetic as `policy_rules.budget_verdict` / `budget_lever` (a property test holds them
equal), without a Python loop or two dozen small numpy calls per request. `warm_up` compiles it
(or loads it from the on-disk cache) when a catalog is loaded, so no request pays for JIT.
"""

from __future__ import annotations

import numpy as np

from nba_service.engine.kernel import _jit

NOT_OVER, OVER_DAY, OVER_HOUR = 0, 1, 2


@_jit
def budget_pass(cands: np.ndarray, block: np.ndarray, day_used: np.ndarray,
                hour_used: np.ndarray, cap_day: np.ndarray, cap_hour: np.ndarray,
                pacing: np.ndarray, exponent: np.ndarray, day_elapsed: float,
                hour_elapsed: float, out_over: np.ndarray, out_lever: np.ndarray) -> int:
    """For candidate i (catalog index cands[i]) with a budget, not already blocked: out_over[i]
    is OVER_DAY / OVER_HOUR when a cap is reached, else out_lever[i] is the pacing multiplier.

    `day_used` / `hour_used` hold one entry per budgeted candidate, in candidate order. Returns
    how many candidates got a multiplier below 1.
    """
    j = 0
    paced = 0
    for i in range(cands.shape[0]):
        a = cands[i]
        cd = cap_day[a]
        ch = cap_hour[a]
        out_over[i] = NOT_OVER
        out_lever[i] = 1.0
        if cd <= 0.0 and ch <= 0.0:
            continue
        d = day_used[j]
        h = hour_used[j]
        j += 1
        if block[i] != 0:
            continue
        if cd > 0.0 and d >= cd:
            out_over[i] = OVER_DAY
            continue
        if ch > 0.0 and h >= ch:
            out_over[i] = OVER_HOUR
            continue
        if not pacing[a]:
            continue
        m = 1.0
        if cd > 0.0:
            x = ((cd - d) / cd) / (1.0 - day_elapsed)
            m = min(m, min(max(x, 0.0), 1.0))
        if ch > 0.0:
            x = ((ch - h) / ch) / (1.0 - hour_elapsed)
            m = min(m, min(max(x, 0.0), 1.0))
        m = m ** exponent[a]
        out_lever[i] = m
        if m < 1.0:
            paced += 1
    return paced


def warm_up() -> None:
    """Compile (or load from cache) with the exact dtypes used at request time."""
    i64, f64 = np.int64, np.float64
    budget_pass(np.zeros(1, dtype=i64), np.zeros(1, dtype=np.int32), np.zeros(1, dtype=f64),
                np.zeros(1, dtype=f64), np.ones(1, dtype=f64), np.zeros(1, dtype=f64),
                np.ones(1, dtype=np.bool_), np.ones(1, dtype=f64), 0.5, 0.5,
                np.zeros(1, dtype=np.int8), np.zeros(1, dtype=f64))
