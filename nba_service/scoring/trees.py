"""LightGBM text models flattened into arrays, for the compiled backend.

The arrays carry exactly what `LightGBM::Tree::Decision` reads, with LightGBM's own numbers
(thresholds and leaf values are printed with 17 significant digits in the text format, so they
parse back to the same doubles):

    node_feature   int32   column tested at each internal node
    node_threshold float64 `x <= threshold` goes left (numerical splits)
    node_flags     uint8   bit 0 categorical, bit 1 default_left, bits 2-3 missing type
                           (0 None: NaN counts as 0; 1 Zero: 0 is missing; 2 NaN: NaN is missing)
    node_left/right int32  child node index, or ~leaf (negative) for a leaf
    node_cat_start/_len    the bitset of a categorical split inside `cat_bits`
    leaf_value     float64
    tree_root      int32   first node of each tree, or ~leaf for a single-leaf tree

Node and leaf indices are global (all trees concatenated) so one kernel walks any tree with
no per-tree offsets in the inner loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["UnsupportedModel", "TreeEnsemble", "parse_model_text"]

CATEGORICAL = 1
DEFAULT_LEFT = 2
MISSING_SHIFT = 2


class UnsupportedModel(ValueError):
    """The model uses a feature the flattened evaluator does not implement (e.g. linear trees)."""


@dataclass(frozen=True)
class TreeEnsemble:
    num_feature: int
    feature_names: list[str]
    objective: str
    sigmoid: float  # probability = 1 / (1 + exp(-sigmoid * raw))
    average_output: bool
    tree_root: np.ndarray
    node_feature: np.ndarray
    node_threshold: np.ndarray
    node_flags: np.ndarray
    node_left: np.ndarray
    node_right: np.ndarray
    node_cat_start: np.ndarray
    node_cat_len: np.ndarray
    cat_bits: np.ndarray
    leaf_value: np.ndarray
    max_depth: int

    @property
    def num_trees(self) -> int:
        return len(self.tree_root)

    @property
    def num_nodes(self) -> int:
        return len(self.node_feature)


def _header(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        if line.startswith("Tree="):
            break
        if "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
        elif line.strip():
            out[line.strip()] = ""  # flags such as `average_output`
    return out


def _objective(header: dict[str, str]) -> tuple[str, float]:
    parts = header.get("objective", "").split()
    if not parts:
        raise UnsupportedModel("model text has no objective line")
    name = parts[0]
    if name == "binary":
        sigmoid = 1.0
        for p in parts[1:]:
            if p.startswith("sigmoid:"):
                sigmoid = float(p.split(":", 1)[1])
        return name, sigmoid
    if name in ("cross_entropy", "xentropy"):
        return "cross_entropy", 1.0
    raise UnsupportedModel(f"objective {name!r}: only binary and cross_entropy are compiled")


def _tree_blocks(lines: list[str]) -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = []
    cur: dict[str, str] | None = None
    for line in lines:
        if line.startswith("Tree="):
            cur = {}
            blocks.append(cur)
        elif line.startswith("end of trees"):
            break
        elif cur is not None and "=" in line:
            key, value = line.split("=", 1)
            cur[key] = value
    return blocks


def _ints(block: dict[str, str], key: str, n: int) -> list[int]:
    values = [int(v) for v in block.get(key, "").split()]
    if len(values) != n:
        raise UnsupportedModel(f"tree field {key!r} has {len(values)} values, expected {n}")
    return values


def _floats(block: dict[str, str], key: str, n: int) -> list[float]:
    values = [float(v) for v in block.get(key, "").split()]
    if len(values) != n:
        raise UnsupportedModel(f"tree field {key!r} has {len(values)} values, expected {n}")
    return values


def parse_model_text(text: str) -> TreeEnsemble:
    """Flatten a LightGBM text model; raises `UnsupportedModel` for what cannot be compiled."""
    lines = text.splitlines()
    header = _header(lines)
    if header.get("num_class", "1") != "1" or header.get("num_tree_per_iteration", "1") != "1":
        raise UnsupportedModel("multi-class models are not compiled")
    objective, sigmoid = _objective(header)
    num_feature = int(header.get("max_feature_idx", "-1")) + 1
    names = header.get("feature_names", "").split()
    roots: list[int] = []
    feature: list[int] = []
    threshold: list[float] = []
    flags: list[int] = []
    left: list[int] = []
    right: list[int] = []
    cat_start: list[int] = []
    cat_len: list[int] = []
    cat_bits: list[int] = []
    leaves: list[float] = []
    max_depth = 0
    blocks = _tree_blocks(lines)
    if not blocks:
        raise UnsupportedModel("model text has no trees")
    for t, block in enumerate(blocks):
        if block.get("is_linear", "0").strip() != "0":
            raise UnsupportedModel(f"tree {t} is a linear tree")
        n_leaves = int(block.get("num_leaves", "0"))
        if n_leaves < 1:
            raise UnsupportedModel(f"tree {t} has {n_leaves} leaves")
        node0, leaf0 = len(feature), len(leaves)
        leaves.extend(_floats(block, "leaf_value", n_leaves))
        if n_leaves == 1:
            roots.append(~leaf0)
            continue
        n_nodes = n_leaves - 1
        roots.append(node0)
        split = _ints(block, "split_feature", n_nodes)
        thr = _floats(block, "threshold", n_nodes)
        dtype = _ints(block, "decision_type", n_nodes)
        lch = _ints(block, "left_child", n_nodes)
        rch = _ints(block, "right_child", n_nodes)
        n_cat = int(block.get("num_cat", "0"))
        bounds: list[int] = []
        words: list[int] = []
        if n_cat > 0:
            bounds = _ints(block, "cat_boundaries", n_cat + 1)
            words = [int(v) for v in block.get("cat_threshold", "").split()]
            if len(words) != bounds[-1]:
                raise UnsupportedModel(f"tree {t}: cat_threshold does not match cat_boundaries")
        bits0 = len(cat_bits)
        cat_bits.extend(words)
        for i in range(n_nodes):
            if not 0 <= split[i] < num_feature:
                raise UnsupportedModel(f"tree {t} node {i}: feature {split[i]} out of range")
            feature.append(split[i])
            flags.append(dtype[i] & 0x0F)
            if dtype[i] & CATEGORICAL:
                k = int(thr[i])
                if not 0 <= k < n_cat:
                    raise UnsupportedModel(f"tree {t} node {i}: bad categorical index {k}")
                cat_start.append(bits0 + bounds[k])
                cat_len.append(bounds[k + 1] - bounds[k])
                threshold.append(0.0)
            else:
                cat_start.append(0)
                cat_len.append(0)
                threshold.append(thr[i])
            for child, out in ((lch[i], left), (rch[i], right)):
                if child >= 0:
                    if child >= n_nodes:
                        raise UnsupportedModel(f"tree {t} node {i}: child {child} out of range")
                    out.append(node0 + child)
                else:
                    if ~child >= n_leaves:
                        raise UnsupportedModel(f"tree {t} node {i}: leaf {~child} out of range")
                    out.append(~(leaf0 + ~child))
        max_depth = max(max_depth, _depth(lch, rch))
    if len(names) != num_feature:
        names = [f"Column_{i}" for i in range(num_feature)]
    return TreeEnsemble(
        num_feature=num_feature, feature_names=names, objective=objective, sigmoid=sigmoid,
        average_output="average_output" in header,
        tree_root=np.asarray(roots, dtype=np.int32),
        node_feature=np.asarray(feature, dtype=np.int32),
        node_threshold=np.asarray(threshold, dtype=np.float64),
        node_flags=np.asarray(flags, dtype=np.uint8),
        node_left=np.asarray(left, dtype=np.int32),
        node_right=np.asarray(right, dtype=np.int32),
        node_cat_start=np.asarray(cat_start, dtype=np.int32),
        node_cat_len=np.asarray(cat_len, dtype=np.int32),
        # uint32 words as LightGBM stores them; int64 keeps the shifts free of sign issues.
        cat_bits=np.asarray(cat_bits if cat_bits else [0], dtype=np.int64),
        leaf_value=np.asarray(leaves, dtype=np.float64),
        max_depth=max_depth,
    )


def _depth(lch: list[int], rch: list[int]) -> int:
    """Edges on the longest root-to-leaf path (iterative: trees can be deep and thin)."""
    best = 0
    seen = 0
    stack = [(0, 1)]
    while stack:
        node, d = stack.pop()
        seen += 1
        if seen > len(lch):
            raise UnsupportedModel("tree nodes do not form a tree (a node is reached twice)")
        best = max(best, d)
        for child in (lch[node], rch[node]):
            if child >= 0:
                stack.append((child, d + 1))
    return best
