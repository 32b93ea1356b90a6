"""Which backend serves a loaded model: parity first, then a fixed order of speed.

Every backend is built from the verified artifact and checked against the LightGBM reference
(itself checked against the golden set) on the golden inputs plus `STRESS_ROWS` rows derived
from them with NaN, +-inf, zeros, values next to zero and unknown or negative category codes
mixed in (categorical columns get integer codes, unknown and negative ones included: the
encoder never produces a fractional code, and ONNX compares codes for equality where LightGBM
truncates). A backend whose max abs difference exceeds its tolerance (1e-6 for float64 backends,
`ONNX_TOLERANCE` for float32 ONNX) is not used for this model.

`auto` then takes the first passing backend in `PREFERENCE`, a fixed order measured by
`loadtests/bench_scoring.py` (docs/scoring.md) rather than a timing taken at load: on a shared
machine a few load-time samples could flip the choice from one reload to the next, and the
order is wide apart where it matters (compiled 16.7x faster than LightGBM at N=100).

The chosen backend is still timed at load, on one customer x 1 and x 100 candidates, to get
the cost model the Decider uses to decide between scoring inline on the event loop and handing
the work to a thread (docs/scoring.md, "Where scoring runs").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from nba_service.scoring.base import Scorer
from nba_service.scoring.compiled import CompiledScorer
from nba_service.scoring.lightgbm_native import LightGBMScorer
from nba_service.scoring.onnx_runtime import ONNX_TOLERANCE, OnnxScorer

__all__ = [
    "AUTO",
    "BACKENDS",
    "PREFERENCE",
    "TOLERANCE",
    "BackendCheck",
    "BackendUnavailable",
    "CostModel",
    "Selection",
    "select_backend",
    "stress_rows",
]

AUTO = "auto"
BACKENDS = ("compiled", "onnx", "lightgbm")
PREFERENCE = ("compiled", "lightgbm", "onnx")
TOLERANCE = {"compiled": 1e-6, "lightgbm": 0.0, "onnx": ONNX_TOLERANCE}
STRESS_ROWS = 256
_STRESS_VALUES = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40, 1e-35, -1e-35,
                           3.0e38, -3.0e38, -0.5, -1.0, -7.0, 0.5, 1.0, 31.0, 32.0, 64.0, 1e9],
                          dtype=np.float32)
_STRESS_CODES = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -1.0, -7.0, 1.0, 31.0, 32.0, 63.0,
                          64.0, 1000.0, 3.0e9], dtype=np.float32)


class BackendUnavailable(ValueError):
    """The requested backend cannot serve this model (missing file, unsupported, no parity)."""


@dataclass(frozen=True)
class BackendCheck:
    backend: str
    ok: bool
    max_diff: float | None = None
    error: str = ""

    def summary(self) -> str:
        if self.ok:
            return f"ok (max diff {self.max_diff:.2g})"
        return f"refused: {self.error}"


@dataclass(frozen=True)
class CostModel:
    """Measured cost of one call, `fixed_us + per_row_us * n` (p50 of a few runs at load)."""

    fixed_us: float
    per_row_us: float

    def estimate_us(self, n: int) -> float:
        return self.fixed_us + self.per_row_us * n


@dataclass(frozen=True)
class Selection:
    scorer: Scorer
    checks: dict[str, BackendCheck] = field(default_factory=dict)
    cost: CostModel = CostModel(0.0, 0.0)


def stress_rows(golden_x: np.ndarray, categorical_columns: Sequence[int] = (),
                n: int = STRESS_ROWS, seed: int = 0) -> np.ndarray:
    """`n` rows mixing the golden inputs column by column, with edge values sprinkled in."""
    rng = np.random.default_rng([seed, 41])
    take = rng.integers(0, golden_x.shape[0], size=(n, golden_x.shape[1]))
    rows = np.take_along_axis(golden_x, take, axis=0).astype(np.float32)
    edge = rng.random(rows.shape) < 0.12
    is_cat = np.zeros(golden_x.shape[1], dtype=bool)
    is_cat[list(categorical_columns)] = True
    numeric_edge = edge & ~is_cat
    code_edge = edge & is_cat
    rows[numeric_edge] = rng.choice(_STRESS_VALUES, size=int(numeric_edge.sum()))
    rows[code_edge] = rng.choice(_STRESS_CODES, size=int(code_edge.sum()))
    return rows


def _build(name: str, reference: LightGBMScorer, model_text: str, onnx_model: bytes | None,
           mode: str, action_columns: Sequence[int]) -> Scorer:
    names = list(reference.feature_names)
    if name == "lightgbm":
        return reference
    if name == "compiled":
        return CompiledScorer.from_model_text(model_text, reference.version, names, mode=mode,
                                              explainer=reference, action_columns=action_columns)
    if name == "onnx":
        if onnx_model is None:
            raise BackendUnavailable("the artifact has no model.onnx")
        return OnnxScorer(onnx_model, reference.version, names, explainer=reference)
    raise BackendUnavailable(f"unknown backend {name!r} (use {', '.join((AUTO, *BACKENDS))})")


def _check(name: str, build: Callable[[], Scorer], rows: np.ndarray, expected: np.ndarray,
           block: np.ndarray, block_expected: np.ndarray) -> tuple[Scorer | None, BackendCheck]:
    try:
        scorer = build()
        got = np.concatenate([scorer.predict(rows), scorer.predict(block)])
    except Exception as exc:  # a backend that cannot build is just not used
        return None, BackendCheck(name, False, error=f"{type(exc).__name__}: {exc}")
    expected = np.concatenate([expected, block_expected])
    diff = np.abs(got - expected)
    worst = float(np.max(np.where(np.isnan(diff), np.inf, diff)))
    if worst > TOLERANCE[name]:
        row = int(np.argmax(np.where(np.isnan(diff), np.inf, diff)))
        return None, BackendCheck(name, False, worst,
                                  f"max abs diff {worst:.3g} > {TOLERANCE[name]:g} at parity "
                                  f"row {row}")
    return scorer, BackendCheck(name, True, worst)


def _block(golden_x: np.ndarray, action_columns: Sequence[int], n: int) -> np.ndarray:
    """One customer (golden row 0) x `n` candidates whose action columns cycle the golden rows."""
    x = np.repeat(golden_x[:1], n, axis=0)
    cols = list(action_columns)
    if cols:
        x[:, cols] = golden_x[np.arange(n) % golden_x.shape[0]][:, cols]
    return np.ascontiguousarray(x, dtype=np.float32)


def _p50_us(scorer: Scorer, x: np.ndarray, reps: int) -> float:
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        scorer.predict(x)
        samples.append(time.perf_counter_ns() - t0)
    return float(np.median(samples)) / 1000.0


def measure_cost(scorer: Scorer, golden_x: np.ndarray, action_columns: Sequence[int],
                 reps: int = 15) -> CostModel:
    one = _p50_us(scorer, _block(golden_x, action_columns, 1), reps)
    hundred = _p50_us(scorer, _block(golden_x, action_columns, 100), reps)
    per_row = max(0.0, (hundred - one) / 99.0)
    return CostModel(fixed_us=max(0.0, one - per_row), per_row_us=per_row)


def select_backend(
    requested: str,
    reference: LightGBMScorer,
    model_text: str,
    onnx_model: bytes | None,
    golden_x: np.ndarray,
    action_columns: Sequence[int] = (),
    categorical_columns: Sequence[int] = (),
    compiled_mode: str = "shared",
) -> Selection:
    """The serving scorer for `requested` (`auto` or a name in BACKENDS), parity-checked.

    Raises `BackendUnavailable` when an explicitly requested backend fails its check.
    """
    if requested != AUTO and requested not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {requested!r} "
                                 f"(use {', '.join((AUTO, *BACKENDS))})")
    rows = np.vstack([golden_x, stress_rows(golden_x, categorical_columns)]).astype(np.float32)
    expected = reference.predict(rows)
    # The serving shape too (one customer x many actions), which takes the compiled backend's
    # customer x action path rather than the tree walk.
    block = _block(golden_x, action_columns, max(16, min(256, golden_x.shape[0])))
    block_expected = reference.predict(block)
    names = PREFERENCE if requested == AUTO else (requested,)
    checks: dict[str, BackendCheck] = {}
    chosen: Scorer | None = None
    for name in names:
        scorer, check = _check(name, partial(_build, name, reference, model_text, onnx_model,
                                             compiled_mode, action_columns), rows, expected,
                               block, block_expected)
        checks[name] = check
        if scorer is not None and chosen is None:
            chosen = scorer
    if chosen is None:
        check = checks[requested] if requested != AUTO else checks["lightgbm"]
        raise BackendUnavailable(f"backend {check.backend}: {check.error}")
    return Selection(scorer=chosen, checks=checks,
                     cost=measure_cost(chosen, golden_x, action_columns))
