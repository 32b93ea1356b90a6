"""LightGBM's own predictor behind the `Scorer` interface: the reference every other backend
is tested against."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np

__all__ = ["LightGBMScorer"]


class LightGBMScorer:
    """Scores with `lightgbm.Booster.predict` on one thread.

    One thread per call because the service already runs one decision per worker thread and
    N is small (tens of candidates): OpenMP fan-out costs more than it saves and oversubscribes
    the cores the other decisions need.
    """

    backend = "lightgbm"

    def __init__(
        self,
        model: str | Path | lgb.Booster,
        version: str,
        feature_names: list[str] | None = None,
    ) -> None:
        booster = model if isinstance(model, lgb.Booster) else lgb.Booster(model_file=str(model))
        self.booster = booster
        self.version = version
        self.num_feature = int(booster.num_feature())
        self.feature_names = list(feature_names) if feature_names else booster.feature_name()
        if len(self.feature_names) != self.num_feature:
            raise ValueError(
                f"model has {self.num_feature} features, {len(self.feature_names)} names given"
            )

    @classmethod
    def from_string(cls, text: str, version: str, feature_names: list[str] | None = None
                    ) -> LightGBMScorer:
        return cls(lgb.Booster(model_str=text), version, feature_names)

    def _check(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != self.num_feature:
            raise ValueError(
                f"expected an (N, {self.num_feature}) matrix, got shape {x.shape}"
            )
        # float32 goes to LightGBM's C API as is; anything else would be copied there anyway.
        return x if x.dtype == np.float32 else x.astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = self._check(x)
        if x.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        return np.asarray(self.booster.predict(x, num_threads=1), dtype=np.float64)

    def raw_score(self, x: np.ndarray) -> np.ndarray:
        """Log-odds before the sigmoid."""
        x = self._check(x)
        if x.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        return np.asarray(self.booster.predict(x, raw_score=True, num_threads=1),
                          dtype=np.float64)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """(N, F + 1) SHAP values (raw space), last column the expected value."""
        x = self._check(x)
        if x.shape[0] == 0:
            return np.empty((0, self.num_feature + 1), dtype=np.float64)
        out = self.booster.predict(x, pred_contrib=True, num_threads=1)
        return np.asarray(out, dtype=np.float64)

    def model_text(self) -> str:
        return str(self.booster.model_to_string())
