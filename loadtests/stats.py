"""The benchmark's arithmetic: percentiles, the composite floor, linear fits, target checks.

Pure functions over numpy arrays, unit-tested in tests/unit/test_bench_stats.py. Latencies are
integers in nanoseconds until they are summarised; summaries are in microseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9),
)


def percentile(samples: np.ndarray | Sequence[float], q: float) -> float:
    """The q-th percentile by the nearest-rank method: an actually observed value, never an
    interpolation between two (a p99.9 of 1,000 samples is the largest, not a made-up one)."""
    a = np.asarray(samples)
    if a.size == 0:
        return float("nan")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside [0, 100]")
    # The epsilon keeps float error (99.9 / 100 * 1000 = 999.0000000000001) off the next rank.
    rank = min(a.size, max(1, int(np.ceil(q * a.size / 100.0 - 1e-9))))
    return float(np.partition(a, rank - 1)[rank - 1])


def summarize(samples_ns: np.ndarray | Sequence[int]) -> dict[str, float]:
    """p50/p95/p99/p99.9 and max in microseconds, plus the sample count."""
    a = np.asarray(samples_ns, dtype=np.float64)
    out = {name: percentile(a, q) / 1000.0 for name, q in PERCENTILES}
    out["max"] = float(a.max()) / 1000.0 if a.size else float("nan")
    out["n"] = float(a.size)
    return out


def composite(parts: Sequence[np.ndarray], n: int = 200_000, seed: int = 0) -> np.ndarray:
    """Samples of the sum of independent stages: the latency of a request that does each stage
    once, one after the other, with each stage as fast as it is on its own.

    Adding per-stage percentiles (p99 + p99 + p99) would overstate the floor's tail; drawing one
    sample of each stage per synthetic request is the convolution of their distributions.
    """
    if not parts or any(len(p) == 0 for p in parts):
        raise ValueError("every stage needs at least one sample")
    rng = np.random.default_rng(seed)
    total = np.zeros(n, dtype=np.float64)
    for p in parts:
        arr = np.asarray(p, dtype=np.float64)
        total += arr[rng.integers(0, arr.size, n)]
    return total


@dataclass(frozen=True)
class LinearFit:
    slope: float
    intercept: float
    r2: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def linear_fit(x: Sequence[float], y: Sequence[float]) -> LinearFit:
    """Least-squares line through (x, y) and its coefficient of determination."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.size < 2 or xa.size != ya.size:
        raise ValueError("need at least two (x, y) points of equal length")
    if np.ptp(xa) == 0:
        raise ValueError("x values are all equal: no slope")
    slope, intercept = np.polyfit(xa, ya, 1)
    pred = slope * xa + intercept
    ss_res = float(np.sum((ya - pred) ** 2))
    ss_tot = float(np.sum((ya - ya.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return LinearFit(float(slope), float(intercept), r2)


def throughput(count: int, seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("duration must be positive")
    return count / seconds


def cpu_cores(ticks_before: int, ticks_after: int, seconds: float, hz: int) -> float:
    """CPU time used between two /proc samples, in cores (1.0 = one core busy all the time)."""
    if seconds <= 0:
        raise ValueError("duration must be positive")
    return (ticks_after - ticks_before) / hz / seconds


@dataclass(frozen=True)
class Target:
    """One published target: `measured <op> limit`; `margin` says by how much it is met or
    missed (positive = met with room, negative = missed), relative to the limit."""

    name: str
    measured: float
    limit: float
    op: str  # "<=" or ">="
    unit: str = ""
    note: str = ""

    @property
    def met(self) -> bool:
        if np.isnan(self.measured):
            return False
        return self.measured <= self.limit if self.op == "<=" else self.measured >= self.limit

    @property
    def margin(self) -> float:
        if self.limit == 0 or np.isnan(self.measured):
            return float("nan")
        if self.op == "<=":
            return (self.limit - self.measured) / self.limit
        return (self.measured - self.limit) / self.limit

    def describe(self) -> str:
        verdict = "met" if self.met else "MISSED"
        pct = abs(self.margin) * 100.0
        side = "under" if self.op == "<=" else "over"
        if not self.met:
            side = "over" if self.op == "<=" else "under"
        return (f"{self.name}: {self.measured:.3g}{self.unit} {self.op} {self.limit:.3g}"
                f"{self.unit} -> {verdict} ({pct:.0f}% {side} the limit)")

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "met": self.met, "margin": self.margin,
                "summary": self.describe()}


def ratio(a: float, b: float) -> float:
    return float("nan") if b == 0 or np.isnan(b) else a / b


def stage_summary(stages: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per server-side stage (store, encode, ...): p50/p99 in microseconds (inputs are us)."""
    out: dict[str, dict[str, float]] = {}
    for name, arr in stages.items():
        a = np.asarray(arr, dtype=np.float64)
        out[name] = {"p50": percentile(a, 50), "p99": percentile(a, 99)}
    return out
