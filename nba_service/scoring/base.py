"""The interface every model backend implements (LightGBM, ONNX Runtime, compiled trees)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Explainer", "Scorer"]


@runtime_checkable
class Scorer(Protocol):
    """Scores one customer's candidate matrix in a single call.

    `predict` takes an (N, F) float32 matrix in `feature_names` column order (NaN = missing)
    and returns (N,) float64 probabilities. Implementations must be safe to call from several
    threads at once and must not keep a reference to `x`.
    """

    version: str
    backend: str
    feature_names: list[str]

    def predict(self, x: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Explainer(Protocol):
    """A scorer that can also break a score down per feature (for reason codes)."""

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """(N, F + 1) float64: per-feature contributions in raw (log-odds) space, last column
        the bias; each row sums to the raw score."""
        ...
