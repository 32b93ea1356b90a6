"""Customer x action decomposition of a tree ensemble: the compiled backend's fast path.

Every row of one decision is (customer and context columns, shared) + (action columns, fixed
per catalog action). In each tree, a leaf is reached iff every split on its path agrees, so
with `left_mask[n]` / `right_mask[n]` the leaves under a node's children (a uint64 per tree),

    leaf(row) = the one bit of  AND over customer splits n: (n goes left ? ~right : ~left)[n]
                            AND AND over action splits n:   (same)

The first AND depends only on the customer: computed once per decision for all trees. The
second depends only on the action columns: computed once per distinct action vector and
cached across decisions (`ActionMaskCache`, an open-addressing table keyed by the action
columns' bit patterns). Scoring a row is then, per tree, one AND, a de Bruijn bit scan and
one leaf add, in tree order in float64 like LightGBM. Splits use the same decision code as
the tree walk (tree_kernel.py); only trees of at most 64 leaves qualify.

`predict_masked` returns -1 when a customer column differs between rows (then the caller uses
the tree walk) and the number of rows whose action vector is not cached yet (the caller
inserts them under a lock and calls again).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from nba_service.scoring.tree_kernel import (
    CAT_LEN,
    CAT_START,
    CATEGORY,
    FEATURE,
    FLAGS,
    KIND,
    NAN_LEFT,
    PLAIN,
    category_of,
    numerical_left,
)
from nba_service.scoring.trees import TreeEnsemble

__all__ = ["DEBRUIJN_TABLE", "MAX_LEAVES", "ActionMaskCache", "MaskTables", "insert_actions",
           "predict_masked"]

MAX_LEAVES = 64
_DEBRUIJN = 0x03F79D71B4CB0A89
# The bit index of a power of two p, looked up by the top 6 bits of p x _DEBRUIJN (mod 2**64).
DEBRUIJN_TABLE = np.zeros(64, dtype=np.int32)
for _i in range(64):
    DEBRUIJN_TABLE[(((1 << _i) * _DEBRUIJN) & 0xFFFFFFFFFFFFFFFF) >> 58] = _i


class MaskTables:
    """Per-model arrays of the decomposition (built once at load)."""

    def __init__(self, e: TreeEnsemble, nodes: np.ndarray, action_columns: np.ndarray) -> None:
        n_trees = e.num_trees
        leaf_base = np.zeros(n_trees, dtype=np.int32)
        full = np.zeros(n_trees, dtype=np.uint64)
        left = np.zeros(e.num_nodes, dtype=np.uint64)
        right = np.zeros(e.num_nodes, dtype=np.uint64)
        is_action = np.isin(e.node_feature, action_columns)
        cust: list[list[int]] = [[] for _ in range(n_trees)]
        act: list[list[int]] = [[] for _ in range(n_trees)]
        for t in range(n_trees):
            root = int(e.tree_root[t])
            base, count = self._walk(e, root, left, right, cust[t], act[t], is_action)
            leaf_base[t] = base
            full[t] = np.uint64(0xFFFFFFFFFFFFFFFF) if count == 64 else np.uint64((1 << count) - 1)
        self.leaf_base = leaf_base
        self.full = full
        self.left_mask = left
        self.right_mask = right
        self.cust_ptr, self.cust_nodes = _csr(cust)
        self.act_ptr, self.act_nodes = _csr(act)
        self.nodes = nodes
        self.action_columns = np.asarray(action_columns, dtype=np.int32)
        self.customer_columns = np.asarray(
            [j for j in range(e.num_feature) if j not in set(action_columns.tolist())],
            dtype=np.int32)

    @staticmethod
    def _walk(e: TreeEnsemble, root: int, left: np.ndarray, right: np.ndarray,
              cust: list[int], act: list[int], is_action: np.ndarray) -> tuple[int, int]:
        """(first global leaf, leaf count) of a tree; fills the masks of its nodes."""
        if root < 0:
            return ~root, 1
        leaves: list[int] = []
        order: list[int] = []
        stack = [root]
        while stack:  # pre-order: a node's leaves are collected after it
            node = stack.pop()
            order.append(node)
            for child in (int(e.node_right[node]), int(e.node_left[node])):
                if child >= 0:
                    stack.append(child)
                else:
                    leaves.append(~child)
        base = min(leaves)
        if max(leaves) - base + 1 != len(leaves) or len(leaves) > MAX_LEAVES:
            raise ValueError(f"tree with {len(leaves)} leaves cannot be decomposed")

        def under(child: int) -> int:
            if child < 0:
                return 1 << (~child - base)
            return int(left[child]) | int(right[child])

        for node in reversed(order):  # children before parents
            left[node] = np.uint64(under(int(e.node_left[node])))
            right[node] = np.uint64(under(int(e.node_right[node])))
            (act if is_action[node] else cust).append(node)
        return base, len(leaves)


def _csr(groups: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    ptr = np.zeros(len(groups) + 1, dtype=np.int32)
    ptr[1:] = np.cumsum([len(g) for g in groups])
    flat = np.asarray([n for g in groups for n in g] or [0], dtype=np.int32)
    return ptr, flat


class ActionMaskCache:
    """Open-addressing table: action columns' bit patterns -> the per-tree action masks."""

    def __init__(self, n_trees: int, n_action_columns: int, capacity: int = 2048) -> None:
        cap = 1 << max(4, int(capacity - 1).bit_length())
        self.keys = np.zeros((cap, max(1, n_action_columns)), dtype=np.int32)
        self.used = np.zeros(cap, dtype=np.uint8)
        self.masks = np.zeros((cap, n_trees), dtype=np.uint64)
        self.limit = (cap * 3) // 4  # beyond this, probing gets long: stop inserting
        self.size = np.zeros(1, dtype=np.int64)


@numba.njit(cache=True, nogil=True)
def _masks(x: np.ndarray, row: int, ptr: np.ndarray, members: np.ndarray, full: np.ndarray,
           left_mask: np.ndarray, right_mask: np.ndarray, nodes: np.ndarray, thr: np.ndarray,
           cat_bits: np.ndarray, out: np.ndarray) -> None:
    # The split decision is written out here rather than called: a Numba call that passes
    # arrays pays reference counting on each of them, many times the cost of the decision.
    for t in range(full.shape[0]):
        m = full[t]
        for k in range(ptr[t], ptr[t + 1]):
            n = members[k]
            v = np.float64(x[row, nodes[n, FEATURE]])
            kind = nodes[n, KIND]
            if kind == PLAIN:
                go = v <= thr[n]
            elif kind == CATEGORY:
                c = category_of(v)
                w = c >> 5
                go = (c >= 0 and w < nodes[n, CAT_LEN]
                      and ((cat_bits[nodes[n, CAT_START] + w] >> (c & 31)) & 1) == 1)
            elif kind == NAN_LEFT:
                go = v <= thr[n] or v != v
            else:
                go = numerical_left(v, nodes[n, FLAGS], thr[n])
            if go:
                m &= ~right_mask[n]
            else:
                m &= ~left_mask[n]
        out[t] = m


@numba.njit(cache=True, nogil=True)
def _slot(bits: np.ndarray, row: int, cols: np.ndarray, keys: np.ndarray, used: np.ndarray
          ) -> tuple[np.int64, bool]:
    """(slot, found): where the row's action key is, or the free slot it would go to."""
    h = np.uint64(1469598103934665603)
    for j in cols:
        h = (h ^ np.uint64(np.uint32(bits[row, j]))) * np.uint64(1099511628211)
    cap = used.shape[0]
    s = np.int64(h & np.uint64(cap - 1))
    while used[s]:
        same = True
        for k in range(cols.shape[0]):
            if keys[s, k] != bits[row, cols[k]]:
                same = False
                break
        if same:
            return s, True
        s = (s + 1) & (cap - 1)
    return s, False


@numba.njit(cache=True, nogil=True)
def insert_actions(x: np.ndarray, cols: np.ndarray, act_ptr: np.ndarray, act_nodes: np.ndarray,
                   full: np.ndarray, left_mask: np.ndarray, right_mask: np.ndarray,
                   nodes: np.ndarray, thr: np.ndarray, cat_bits: np.ndarray, keys: np.ndarray,
                   used: np.ndarray, masks: np.ndarray, size: np.ndarray, limit: int) -> bool:
    """Cache every row's action masks; False when the table is full (nothing is evicted)."""
    bits = x.view(np.int32)
    for i in range(x.shape[0]):
        s, found = _slot(bits, i, cols, keys, used)
        if found:
            continue
        if size[0] >= limit:
            return False
        _masks(x, i, act_ptr, act_nodes, full, left_mask, right_mask, nodes, thr, cat_bits,
               masks[s])
        for k in range(cols.shape[0]):
            keys[s, k] = bits[i, cols[k]]
        used[s] = 1  # last: a slot is never seen half written
        size[0] += 1
    return True


@numba.njit(cache=True, nogil=True)
def predict_masked(x: np.ndarray, customer_cols: np.ndarray, cols: np.ndarray,
                   cust_ptr: np.ndarray, cust_nodes: np.ndarray, full: np.ndarray,
                   left_mask: np.ndarray, right_mask: np.ndarray, leaf_base: np.ndarray,
                   nodes: np.ndarray, thr: np.ndarray, cat_bits: np.ndarray,
                   keys: np.ndarray, used: np.ndarray, masks: np.ndarray,
                   leaves: np.ndarray, debruijn: np.ndarray, sigmoid: float, divisor: float,
                   out: np.ndarray) -> int:
    n = x.shape[0]
    for j in customer_cols:
        v0 = x[0, j]
        for i in range(1, n):
            v = x[i, j]
            if v != v0 and not (v != v and v0 != v0):
                return -1
    bits = x.view(np.int32)
    slots = np.empty(n, dtype=np.int64)
    missing = 0
    for i in range(n):
        s, found = _slot(bits, i, cols, keys, used)
        slots[i] = s
        if not found:
            missing += 1
    if missing:
        return missing
    cust = np.empty(full.shape[0], dtype=np.uint64)
    _masks(x, 0, cust_ptr, cust_nodes, full, left_mask, right_mask, nodes, thr, cat_bits, cust)
    mult = np.uint64(0x03F79D71B4CB0A89)
    shift = np.uint64(58)
    for i in range(n):
        acc = 0.0
        row = masks[slots[i]]
        for t in range(cust.shape[0]):
            m = cust[t] & row[t]
            acc += leaves[leaf_base[t] + debruijn[(m * mult) >> shift]]
        raw = acc / divisor if divisor != 1.0 else acc
        out[i] = 1.0 / (1.0 + math.exp(-sigmoid * raw))
    return 0
