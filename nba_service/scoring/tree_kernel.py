"""The tree-walking kernels of the compiled backend (see compiled.py for the design).

`predict_block` walks every tree once per block of rows: a split on a column equal across the
block is decided once, a split on a varying column partitions the block. `node_table` packs
what a node needs into one int32 row (feature, children, kind, flags, bitset slice).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from nba_service.scoring.trees import TreeEnsemble

_ZERO = 1.0000000180025095e-35  # LightGBM's kZeroThreshold: the float 1e-35f, widened
_INT_LIMIT = 2147483648.0


# Node kinds, chosen at load so the common splits cost one comparison.
PLAIN = 0  # numerical, NaN goes right, threshold outside [-1e-35, 1e-35): `v <= thr` says it all
NAN_LEFT = 1  # the same, but NaN goes left: `v <= thr or v is NaN`
GENERAL = 2  # numerical, anything else (zero-as-missing, thresholds next to zero)
CATEGORY = 3
# Columns of the int32 node table.
FEATURE, LEFT, RIGHT, KIND, FLAGS, CAT_START, CAT_LEN = range(7)


@numba.njit(cache=True, nogil=True)
def numerical_left(v: float, flags: int, thr: float) -> bool:
    """`Tree::NumericalDecision` after the C API's rule that |x| <= kZeroThreshold reads 0."""
    if -_ZERO <= v <= _ZERO:
        v = 0.0
    missing = (flags >> 2) & 3
    if math.isnan(v):
        if missing == 2:
            return (flags & 2) != 0
        v = 0.0
    if missing == 1 and -_ZERO <= v <= _ZERO:
        return (flags & 2) != 0
    return v <= thr


@numba.njit(cache=True, nogil=True)
def category_of(v: float) -> int:
    """The category `Tree::CategoricalDecision` looks up, or -1 when it goes right regardless.

    static_cast<int>(fval) gives INT_MIN (negative: right) for NaN and out-of-range values on
    x86; truncation toward zero makes (-1, 0) category 0 (so |x| <= 1e-35 needs no rule).
    """
    if math.isnan(v) or v >= _INT_LIMIT or v <= -1.0:
        return -1
    return int(v)


@numba.njit(cache=True, nogil=True)
def predict_block(x: np.ndarray, all_vary: bool, roots: np.ndarray, nodes: np.ndarray,
             thr: np.ndarray, cat_bits: np.ndarray, leaves: np.ndarray, sigmoid: float,
             divisor: float, max_depth: int, out: np.ndarray) -> None:
    n, n_cols = x.shape
    out[:] = 0.0
    varying = np.zeros(n_cols, dtype=np.bool_)
    for j in range(n_cols):
        if all_vary:
            varying[j] = True
            continue
        v0 = x[0, j]
        for i in range(1, n):
            v = x[i, j]
            # Equal values (NaN counts as equal to NaN) take the same branch everywhere.
            if v != v0 and not (math.isnan(v) and math.isnan(v0)):
                varying[j] = True
                break
    rows = np.arange(n, dtype=np.int32)
    st_node = np.empty(max_depth + 2, dtype=np.int32)
    st_lo = np.empty(max_depth + 2, dtype=np.int32)
    st_hi = np.empty(max_depth + 2, dtype=np.int32)
    for t in range(roots.shape[0]):
        root = roots[t]
        if root < 0:
            lv = leaves[~root]
            for i in range(n):
                out[i] += lv
            continue
        st_node[0] = root
        st_lo[0] = 0
        st_hi[0] = n
        sp = 1
        while sp > 0:
            sp -= 1
            node = st_node[sp]
            lo = st_lo[sp]
            hi = st_hi[sp]
            while node >= 0:
                # Everything about the node is read once, before the loop over rows: the row
                # swaps below store to an int32 array the compiler cannot prove distinct.
                j = nodes[node, FEATURE]
                kind = nodes[node, KIND]
                flags = nodes[node, FLAGS]
                c_start = nodes[node, CAT_START]
                c_len = nodes[node, CAT_LEN]
                t_node = thr[node]
                vary = varying[j]
                # Rows going left move to the front of [lo, hi), each tested once; on a shared
                # column the first row decides for the whole block.
                a = lo
                b = hi - 1
                while a <= b:
                    v = np.float64(x[rows[a], j])
                    if kind == PLAIN:
                        go = v <= t_node
                    elif kind == CATEGORY:
                        c = category_of(v)
                        w = c >> 5
                        go = (c >= 0 and w < c_len
                              and ((cat_bits[c_start + w] >> (c & 31)) & 1) == 1)
                    elif kind == NAN_LEFT:
                        go = v <= t_node or v != v
                    else:
                        go = numerical_left(v, flags, t_node)
                    if not vary:
                        a = hi if go else lo
                        break
                    if go:
                        a += 1
                    else:
                        r = rows[a]
                        rows[a] = rows[b]
                        rows[b] = r
                        b -= 1
                if a == hi:
                    node = nodes[node, LEFT]
                elif a == lo:
                    node = nodes[node, RIGHT]
                else:
                    st_node[sp] = nodes[node, RIGHT]
                    st_lo[sp] = a
                    st_hi[sp] = hi
                    sp += 1
                    node = nodes[node, LEFT]
                    hi = a
            lv = leaves[~node]
            for k in range(lo, hi):
                out[rows[k]] += lv
    for i in range(n):
        raw = out[i] / divisor if divisor != 1.0 else out[i]
        out[i] = 1.0 / (1.0 + math.exp(-sigmoid * raw))


def node_table(e: TreeEnsemble) -> np.ndarray:
    flags = e.node_flags.astype(np.int32)
    thr = e.node_threshold
    missing = (flags >> 2) & 3
    default_left = (flags & 2) != 0
    near_zero = (thr >= -_ZERO) & (thr < _ZERO)
    # Where NaN ends up: its own default way for missing type NaN or Zero (NaN reads 0, which
    # is missing), else it reads 0 and compares.
    nan_left = np.where(missing == 0, thr >= 0.0, default_left)
    simple = (missing != 1) & ~near_zero
    kind = np.where(simple & ~nan_left, PLAIN, np.where(simple & nan_left, NAN_LEFT, GENERAL))
    kind = np.where((flags & 1) != 0, CATEGORY, kind)
    table = np.empty((e.num_nodes, 7), dtype=np.int32)
    table[:, FEATURE] = e.node_feature
    table[:, LEFT] = e.node_left
    table[:, RIGHT] = e.node_right
    table[:, KIND] = kind
    table[:, FLAGS] = flags
    table[:, CAT_START] = e.node_cat_start
    table[:, CAT_LEN] = e.node_cat_len
    return table


