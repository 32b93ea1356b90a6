"""Where a score is computed: inline on the event loop, or on a scoring thread.

Handing work to a thread costs a fixed hop (submit, wake a worker, post the result back to
the loop) measured at tens of microseconds by `loadtests/bench_scoring.py`; the compiled
backend scores one customer x 100 candidates in less than that. So a call whose estimated
cost (the model's `CostModel`, measured at load) is at most `inline_max_us` runs inline, and
a bigger one goes to the pool, where the GIL-free kernels (Numba nogil, LightGBM and ONNX
Runtime release the GIL) run while the loop serves other requests. docs/scoring.md has the
numbers behind the default.

The Decider reuses one input matrix across requests, which is only safe while nothing awaits
between encoding and scoring; an offloaded call therefore scores a private copy and returns it,
and the caller keeps using that copy.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from nba_service.engine.catalog import Catalog
from nba_service.scoring.artifact import LoadedModel
from nba_service.types import ShadowScores

__all__ = ["ScoringRunner"]

log = logging.getLogger(__name__)


class ScoringRunner:
    def __init__(self, inline_max_us: float = 200.0, threads: int = 2) -> None:
        self.inline_max_us = inline_max_us
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self.inline_calls = 0
        self.offloaded_calls = 0
        self.shadow_failures = 0

    def start(self) -> None:
        if self._pool is None and self.threads > 0:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="nba-score")

    def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=False)

    def _inline(self, model: LoadedModel, n: int) -> bool:
        return self._pool is None or model.cost.estimate_us(n) <= self.inline_max_us

    async def score(self, model: LoadedModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, the matrix that was scored); see the module doc for why the matrix."""
        if self._inline(model, x.shape[0]):
            self.inline_calls += 1
            return model.scorer.predict(x), x
        own = x.copy()
        return await self._offload(model, own), own

    async def _offload(self, model: LoadedModel, own: np.ndarray) -> np.ndarray:
        pool = self._pool
        assert pool is not None
        self.offloaded_calls += 1
        return await asyncio.get_running_loop().run_in_executor(pool, model.scorer.predict, own)

    async def shadow(self, model: LoadedModel, x: np.ndarray, catalog: Catalog,
                     candidates: np.ndarray) -> tuple[ShadowScores | None, np.ndarray]:
        """The shadow model's scores of the candidates; a failure only costs the shadow."""
        if not self._inline(model, x.shape[0]):
            x = x.copy()
        try:
            if self._inline(model, x.shape[0]):
                self.inline_calls += 1
                scores = model.scorer.predict(x)
            else:
                scores = await self._offload(model, x)
        except Exception:
            self.shadow_failures += 1
            log.exception("shadow model %s failed; the decision is served without it",
                          model.version)
            return None, x
        ids = tuple(catalog.actions[int(i)].id for i in candidates)
        return ShadowScores(model.version, ids, tuple(float(v) for v in scores)), x

    def details(self) -> dict[str, object]:
        return {
            "scoring_inline_max_us": self.inline_max_us,
            "scoring_inline_calls": self.inline_calls,
            "scoring_offloaded_calls": self.offloaded_calls,
            "shadow_failures": self.shadow_failures,
        }
