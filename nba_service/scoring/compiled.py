"""The compiled backend: LightGBM trees as flat arrays, walked by a Numba kernel.

Why our own kernel rather than lleaves or treelite: the model is data (arrays), not code, so
one kernel compiled once per process (and cached on disk) serves every model version: a hot
swap costs a text parse, never a compiler run, and nothing needs a C toolchain at run time.

The kernels share one decision function, a port of `LightGBM::Tree::Decision` (numerical: NaN
reads 0 unless the split's missing type is NaN, missing type Zero sends 0 the default way;
categorical: the value truncated to int, NaN, negative or out of int range go right, else a
bitset lookup), applied after LightGBM's input rule that |x| <= 1e-35 reads as 0. Every row
sums its leaves in tree order in float64, like `GBDT::PredictRaw`, so results equal
`Booster.predict` to the last bit of the raw score.

- `shared` (the default) with `action_columns` (from the schema): the customer x action
  decomposition of masked.py for blocks of at least `MASKED_MIN_ROWS` rows that share their
  customer columns; otherwise, and for trees over 64 leaves, the shared tree walk of
  tree_kernel.py (each tree walked once per block, splits on shared columns decided once).
- `rowwise`: the tree walk with every column treated as varying (a per-row walk).

docs/scoring.md has the details and the benchmark.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from nba_service.scoring.masked import (
    DEBRUIJN_TABLE,
    ActionMaskCache,
    MaskTables,
    insert_actions,
    predict_masked,
)
from nba_service.scoring.tree_kernel import node_table, predict_block
from nba_service.scoring.trees import TreeEnsemble, parse_model_text

__all__ = ["MODES", "CompiledScorer", "warm_up"]

MODES = ("shared", "rowwise")
# Typed loosely: the kernels take their argument tuples unpacked.
_masked_kernel: Any = predict_masked
_insert_kernel: Any = insert_actions
# Below this many rows one walk per tree beats evaluating every customer split of every tree.
MASKED_MIN_ROWS = 4


class CompiledScorer:
    """`Scorer` over a flattened LightGBM model; `mode` picks the kernel (see module doc).

    Explanations are delegated to the LightGBM reference when one is given: they are rare
    (explain=true requests) and TreeSHAP is not worth a second implementation.
    """

    backend = "compiled"

    def __init__(self, ensemble: TreeEnsemble, version: str, feature_names: list[str],
                 mode: str = "shared", explainer: object | None = None,
                 action_columns: Sequence[int] = (), action_cache: int = 2048) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: use one of {', '.join(MODES)}")
        if len(feature_names) != ensemble.num_feature:
            raise ValueError(f"model has {ensemble.num_feature} features, "
                             f"{len(feature_names)} names given")
        self.ensemble = ensemble
        self.version = version
        self.feature_names = list(feature_names)
        self.num_feature = ensemble.num_feature
        self.mode = mode
        if mode == "rowwise":
            self.backend = "compiled-rowwise"
        e = ensemble
        nodes = node_table(e)
        divisor = float(e.num_trees) if e.average_output else 1.0
        self._args = (mode == "rowwise", e.tree_root, nodes, e.node_threshold,
                      e.cat_bits, e.leaf_value, float(e.sigmoid), divisor, int(e.max_depth))
        self._explainer = explainer
        # The customer x action decomposition (masked.py), when the action columns are known
        # and every tree is small enough; the tree walk stays the fallback.
        self._masked: tuple[Any, ...] | None = None
        self._insert: tuple[Any, ...] = ()
        self._lock = threading.Lock()
        cols = np.asarray(sorted(set(action_columns)), dtype=np.int32)
        if mode == "shared" and len(cols) and int(e.tree_root.max(initial=-1)) >= 0:
            try:
                tables = MaskTables(e, nodes, cols)
            except ValueError:
                tables = None
            if tables is not None:
                cache = ActionMaskCache(e.num_trees, len(cols), action_cache)
                self._masked = (tables.customer_columns, tables.action_columns,
                                tables.cust_ptr, tables.cust_nodes, tables.full,
                                tables.left_mask, tables.right_mask, tables.leaf_base, nodes,
                                e.node_threshold, e.cat_bits, cache.keys, cache.used,
                                cache.masks, e.leaf_value, DEBRUIJN_TABLE, float(e.sigmoid),
                                divisor)
                self._insert = (tables.action_columns, tables.act_ptr, tables.act_nodes,
                                tables.full, tables.left_mask, tables.right_mask, nodes,
                                e.node_threshold, e.cat_bits, cache.keys, cache.used,
                                cache.masks, cache.size, cache.limit)
                self.action_cache = cache

    @classmethod
    def from_model_text(cls, text: str, version: str, feature_names: list[str] | None = None,
                        mode: str = "shared", explainer: object | None = None,
                        action_columns: Sequence[int] = ()) -> CompiledScorer:
        ensemble = parse_model_text(text)
        return cls(ensemble, version, feature_names or ensemble.feature_names, mode, explainer,
                   action_columns)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != self.num_feature:
            raise ValueError(f"expected an (N, {self.num_feature}) matrix, got shape {x.shape}")
        out = np.empty(x.shape[0], dtype=np.float64)
        if not x.shape[0]:
            return out
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self._masked is not None and x.shape[0] >= MASKED_MIN_ROWS and self._try_masked(x, out):
            return out
        predict_block(x, *self._args, out)
        return out

    def _try_masked(self, x: np.ndarray, out: np.ndarray) -> bool:
        assert self._masked is not None
        # One caller at a time: the cache is filled in place (cheap: the kernel is microseconds).
        with self._lock:
            missing = _masked_kernel(x, *self._masked, out)
            if missing > 0 and _insert_kernel(x, *self._insert):
                missing = _masked_kernel(x, *self._masked, out)
        return missing == 0

    def contributions(self, x: np.ndarray) -> np.ndarray:
        contributions = getattr(self._explainer, "contributions", None)
        if contributions is None:
            raise NotImplementedError("this compiled scorer has no explainer")
        return np.asarray(contributions(x), dtype=np.float64)


_WARM_MODEL = """tree
version=v4
num_class=1
num_tree_per_iteration=1
label_index=0
max_feature_idx=1
objective=binary sigmoid:1
feature_names=a b

Tree=0
num_leaves=3
num_cat=1
split_feature=0 1
threshold=0 0.5
decision_type=1 10
left_child=-1 -2
right_child=1 -3
leaf_value=0.1 -0.2 0.3
cat_boundaries=0 1
cat_threshold=5
is_linear=0
shrinkage=1


end of trees
"""


def warm_up() -> None:
    """Compile (or load from the on-disk cache) both kernels, so no request pays for JIT."""
    x = np.array([[0.0, 1.0], [2.0, np.nan], [1.0, 0.0]], dtype=np.float32)
    for mode in MODES:
        CompiledScorer.from_model_text(_WARM_MODEL, "warm-up", mode=mode).predict(x)
    # and the customer x action path, cache insert included
    block = np.array([[2.0, v] for v in (0.0, 1.0, np.nan, 0.7)], dtype=np.float32)
    CompiledScorer.from_model_text(_WARM_MODEL, "warm-up", action_columns=(1,)).predict(block)
