"""Off-policy evaluation: what would a new policy have earned on traffic served by the old one?

Inputs are plain arrays, one row per logged decision:

    reward   (n,)    observed reward of the logged action (e.g. accepted x business value)
    action   (n,)    index of the logged action
    pscore   (n,)    the logging policy's probability of that action (its selection probability)
    pi       (n, A)  the new policy's probability of each action in that context
    q_hat    (n, A)  a reward model's prediction for each action (doubly robust / direct method)

Estimators (Dudik, Langford & Li 2011; Swaminathan & Joachims 2015):

    IPS    mean_i  w_i r_i                                  w_i = pi(a_i|x_i) / pscore_i
    SNIPS  sum_i w_i r_i / sum_i w_i
    DM     mean_i  sum_a pi(a|x_i) q_hat(x_i, a)
    DR     mean_i  [ sum_a pi(a|x_i) q_hat(x_i, a) + w_i (r_i - q_hat(x_i, a_i)) ]

Confidence intervals come from a seeded nonparametric bootstrap over rows (percentile
intervals). Diagnostics say when not to trust the numbers: the effective sample size of the
importance weights (sum w)^2 / sum w^2, the smallest logged propensity, the largest weight and
its share of the total, and a list of human-readable warnings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = [
    "ESTIMATORS",
    "Estimate",
    "OPEResult",
    "WeightDiagnostics",
    "evaluate_policy",
    "greedy_policy",
    "weight_diagnostics",
]

ESTIMATORS = ("ips", "snips", "dm", "dr")
# Below these the estimate rests on a handful of rows, or on weights so large that one row
# decides the answer: report it, but say so.
MIN_ESS_FRACTION = 0.01
MIN_ESS = 100.0
MIN_PROPENSITY = 0.01
MAX_WEIGHT_SHARE = 0.05


@dataclass(frozen=True)
class Estimate:
    value: float
    lower: float  # percentile bootstrap interval
    upper: float
    std_error: float  # bootstrap standard deviation

    def covers(self, truth: float) -> bool:
        return self.lower <= truth <= self.upper


@dataclass(frozen=True)
class WeightDiagnostics:
    n: int
    ess: float  # effective sample size of the importance weights
    ess_fraction: float
    min_propensity: float
    max_weight: float
    max_weight_share: float  # largest single weight / sum of weights
    mean_weight: float  # ~1 when the new policy stays within the logging policy's support
    matched: int  # rows where the new policy could have taken the logged action
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class OPEResult:
    estimates: dict[str, Estimate]
    logged: Estimate  # the logging policy's own value: the mean observed reward
    diagnostics: WeightDiagnostics
    confidence: float
    n_bootstrap: int

    def to_dict(self) -> dict[str, object]:
        return {
            "estimates": {k: asdict(v) for k, v in self.estimates.items()},
            "logged": asdict(self.logged),
            "diagnostics": asdict(self.diagnostics),
            "confidence": self.confidence,
            "n_bootstrap": self.n_bootstrap,
        }


def greedy_policy(scores: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """(n, A) one-hot of the highest score per row among `allowed`; all-zero rows (serve
    nothing) where no action is allowed or every allowed score is NaN."""
    s = np.asarray(scores, dtype=np.float64).copy()
    if allowed is not None:
        s[~np.asarray(allowed, dtype=bool)] = np.nan
    s = np.where(np.isnan(s), -np.inf, s)
    best = s.argmax(axis=1)
    pi = np.zeros_like(s)
    has = np.isfinite(s.max(axis=1)) if s.shape[1] else np.zeros(s.shape[0], dtype=bool)
    pi[np.flatnonzero(has), best[has]] = 1.0
    return pi


def _check(
    reward: np.ndarray, action: np.ndarray, pscore: np.ndarray, pi: np.ndarray,
    q_hat: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    r = np.asarray(reward, dtype=np.float64)
    a = np.asarray(action, dtype=np.intp)
    p = np.asarray(pscore, dtype=np.float64)
    pol = np.asarray(pi, dtype=np.float64)
    n = r.shape[0]
    if r.ndim != 1 or a.shape != (n,) or p.shape != (n,):
        raise ValueError(f"reward, action and pscore must be (n,) arrays of one length; got "
                         f"{r.shape}, {a.shape}, {p.shape}")
    if pol.ndim != 2 or pol.shape[0] != n:
        raise ValueError(f"pi must be (n, n_actions) with n={n}; got {pol.shape}")
    if n == 0:
        raise ValueError("no logged rows to evaluate")
    if np.any(~np.isfinite(r)):
        raise ValueError(f"reward has {int((~np.isfinite(r)).sum())} non-finite values")
    if np.any((a < 0) | (a >= pol.shape[1])):
        raise ValueError(f"action indices must be in [0, {pol.shape[1]})")
    bad = ~(np.isfinite(p) & (p > 0) & (p <= 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"pscore must be in (0, 1]; row {i} has {p[i]!r} "
                         f"({int(bad.sum())} bad rows)")
    if np.any(pol < -1e-12) or np.any(pol.sum(axis=1) > 1 + 1e-9):
        raise ValueError("pi must be >= 0 and sum to <= 1 per row")
    q = None
    if q_hat is not None:
        q = np.nan_to_num(np.asarray(q_hat, dtype=np.float64), nan=0.0)
        if q.shape != pol.shape:
            raise ValueError(f"q_hat has shape {q.shape}, expected {pol.shape}")
    return r, a, p, pol, q


def weight_diagnostics(
    pscore: np.ndarray, target_prob: np.ndarray, *, min_propensity: float = MIN_PROPENSITY,
) -> WeightDiagnostics:
    """Effective sample size and warnings for importance weights `target_prob / pscore`."""
    p = np.asarray(pscore, dtype=np.float64)
    w = np.asarray(target_prob, dtype=np.float64) / p
    n = int(w.shape[0])
    total, sq = float(w.sum()), float((w * w).sum())
    ess = total * total / sq if sq > 0 else 0.0
    max_w = float(w.max()) if n else 0.0
    share = max_w / total if total > 0 else 1.0
    matched = int((w > 0).sum())
    warnings: list[str] = []
    if matched == 0:
        warnings.append("the new policy never takes the logged action: importance-weighted "
                        "estimates are 0 by construction and say nothing")
    if ess < max(MIN_ESS, MIN_ESS_FRACTION * n):
        warnings.append(f"effective sample size {ess:.1f} of {n} rows is too small for a "
                        "trustworthy estimate")
    small = int((p < min_propensity).sum())
    if small:
        warnings.append(f"{small} rows have logged propensity < {min_propensity:g} (smallest "
                        f"{float(p.min()):.2g}): their weights reach {max_w:.3g}")
    if share > MAX_WEIGHT_SHARE and matched > 0:
        warnings.append(f"one row carries {share:.1%} of the total importance weight")
    return WeightDiagnostics(
        n=n, ess=ess, ess_fraction=ess / n if n else 0.0, min_propensity=float(p.min()),
        max_weight=max_w, max_weight_share=share, mean_weight=total / n if n else 0.0,
        matched=matched, warnings=warnings,
    )


def _point(
    idx: np.ndarray | None, r: np.ndarray, w: np.ndarray, dm_row: np.ndarray | None,
    dr_row: np.ndarray | None,
) -> dict[str, float]:
    take = (lambda v: v) if idx is None else (lambda v: v[idx])
    rw, ws = take(r * w), take(w)
    out = {"ips": float(rw.mean()), "snips": float(rw.sum() / ws.sum()) if ws.sum() > 0 else 0.0,
           "logged": float(take(r).mean())}
    if dm_row is not None and dr_row is not None:
        out["dm"] = float(take(dm_row).mean())
        out["dr"] = float(take(dr_row).mean())
    return out


def evaluate_policy(
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    pi: np.ndarray,
    q_hat: np.ndarray | None = None,
    *,
    n_bootstrap: int = 400,
    confidence: float = 0.95,
    seed: int = 0,
    min_propensity: float = MIN_PROPENSITY,
    estimators: Sequence[str] = ESTIMATORS,
) -> OPEResult:
    """IPS, SNIPS (and with `q_hat`, DM and DR) estimates of the value of `pi` with bootstrap
    intervals, the logging policy's observed value, and weight diagnostics."""
    r, a, p, pol, q = _check(reward, action, pscore, pi, q_hat)
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence {confidence} must be in [0.5, 1)")
    if n_bootstrap < 10:
        raise ValueError(f"n_bootstrap {n_bootstrap} must be >= 10")
    unknown = set(estimators) - set(ESTIMATORS)
    if unknown:
        raise ValueError(f"unknown estimators {sorted(unknown)}; known: {ESTIMATORS}")
    n = r.shape[0]
    rows = np.arange(n)
    target = pol[rows, a]
    w = target / p
    dm_row = dr_row = None
    if q is not None:
        dm_row = (pol * q).sum(axis=1)
        dr_row = dm_row + w * (r - q[rows, a])
    point = _point(None, r, w, dm_row, dr_row)
    rng = np.random.default_rng([seed, 17])
    boots: dict[str, np.ndarray] = {k: np.empty(n_bootstrap) for k in point}
    for b in range(n_bootstrap):
        sample = _point(np.asarray(rng.integers(0, n, n)), r, w, dm_row, dr_row)
        for k, v in sample.items():
            boots[k][b] = v
    lo_q, hi_q = (1 - confidence) / 2, 1 - (1 - confidence) / 2

    def estimate(k: str) -> Estimate:
        lo, hi = np.quantile(boots[k], [lo_q, hi_q])
        return Estimate(value=point[k], lower=float(lo), upper=float(hi),
                        std_error=float(boots[k].std(ddof=1)))

    wanted = [k for k in estimators if k in point]
    return OPEResult(
        estimates={k: estimate(k) for k in wanted}, logged=estimate("logged"),
        diagnostics=weight_diagnostics(p, target, min_propensity=min_propensity),
        confidence=confidence, n_bootstrap=n_bootstrap,
    )
