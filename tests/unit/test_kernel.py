"""The Numba kernels: rule VM against a pure-Python reference, and arbitration via Engine."""

from __future__ import annotations

import ast
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.schema import FeatureSchema
from nba_service.engine import kernel
from nba_service.engine.arbitration import Engine
from nba_service.engine.catalog import CHANNELS, Catalog, parse_catalog
from nba_service.engine.kernel import eval_programs
from nba_service.engine.reasons import Stage
from nba_service.engine.rules import ProgramBuilder, SymbolTable

NAN = math.nan

# ---------------------------------------------------------------- differential rule test

DIFF_SCHEMA = FeatureSchema.from_dict({"features": [
    {"name": "f0", "dtype": "float"},
    {"name": "f1", "dtype": "float"},
    {"name": "i0", "dtype": "int"},
    {"name": "b0", "dtype": "bool"},
    {"name": "c0", "dtype": "categorical", "vocabulary": ["a", "b", "c"]},
    {"name": "c1", "dtype": "categorical", "source": "context", "vocabulary": ["x", "y"]},
]})
DIFF_TABLE = SymbolTable.from_schema(DIFF_SCHEMA, CHANNELS)
NUM_NAMES = ["f0", "f1", "i0", "b0"]
CAT_LITERALS = {"c0": ["a", "b", "c"], "c1": ["x", "y"], "channel": list(CHANNELS)}


def _f32(v: float) -> float:
    return float(np.float32(v))


def _truth(x: float) -> float:
    return NAN if math.isnan(x) else (0.0 if x == 0.0 else 1.0)


def _and(a: float, b: float) -> float:
    a, b = _truth(a), _truth(b)
    if a == 0.0 or b == 0.0:
        return 0.0
    return NAN if math.isnan(a) or math.isnan(b) else 1.0


def _or(a: float, b: float) -> float:
    a, b = _truth(a), _truth(b)
    if a == 1.0 or b == 1.0:
        return 1.0
    return NAN if math.isnan(a) or math.isnan(b) else 0.0


_CMP = {
    ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
}


def reference(node: ast.expr, env: dict[str, float]) -> float:
    """Independent tree-walking evaluator of the documented semantics (docs/catalog.md)."""
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool):
            return 1.0 if v else 0.0
        assert isinstance(v, int | float)
        return _f32(v)
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        x = reference(node.operand, env)
        if isinstance(node.op, ast.Not):
            t = _truth(x)
            return t if math.isnan(t) else 1.0 - t
        return -x
    if isinstance(node, ast.BoolOp):
        vals = [reference(v, env) for v in node.values]
        acc = vals[0]
        for v in vals[1:]:
            acc = _and(acc, v) if isinstance(node.op, ast.And) else _or(acc, v)
        return acc
    if isinstance(node, ast.BinOp):
        a, b = reference(node.left, env), reference(node.right, env)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        return NAN if b == 0.0 else a / b
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        name = node.func.id
        xs = [reference(a, env) for a in node.args]
        if name == "present":
            return 0.0 if math.isnan(xs[0]) else 1.0
        if name == "missing":
            return 1.0 if math.isnan(xs[0]) else 0.0
        if name == "abs":
            return abs(xs[0])
        if any(math.isnan(x) for x in xs):
            return NAN
        return float(min(xs) if name == "min" else max(xs))
    assert isinstance(node, ast.Compare)
    result = 1.0
    left = node.left
    for op, right in zip(node.ops, node.comparators, strict=True):
        result = _and(result, _compare(left, op, right, env))
        left = right
    return result


def _compare(left: ast.expr, op: ast.cmpop, right: ast.expr, env: dict[str, float]) -> float:
    def operand(n: ast.expr, other: ast.expr) -> float:
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            assert isinstance(other, ast.Name)
            return float(CAT_LITERALS[other.id].index(n.value))
        return reference(n, env)

    if isinstance(op, ast.In | ast.NotIn):
        x = reference(left, env)
        if math.isnan(x):
            return NAN
        assert isinstance(right, ast.List)
        members = [operand(e, left) for e in right.elts]
        found = 1.0 if x in members else 0.0
        return found if isinstance(op, ast.In) else 1.0 - found
    a, b = operand(left, right), operand(right, left)
    if math.isnan(a) or math.isnan(b):
        return NAN
    return 1.0 if _CMP[type(op)](a, b) else 0.0


_literal = st.one_of(
    st.integers(-5, 5).map(str),
    st.sampled_from(["0.5", "0.1", "-2.5", "1e30", "3e-3", "0", "True", "False", "16777217"]),
)
_num_leaf = st.one_of(st.sampled_from(NUM_NAMES), _literal)
@st.composite
def _cat_test(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(["c0", "c1", "channel"]))
    lits = CAT_LITERALS[name]
    kind = draw(st.sampled_from(["eq", "ne", "in", "not in", "rev", "present"]))
    if kind == "present":
        return f"{draw(st.sampled_from(['present', 'missing']))}({name})"
    lit = draw(st.sampled_from(lits))
    if kind == "eq":
        return f"({name} == '{lit}')"
    if kind == "ne":
        return f"({name} != '{lit}')"
    if kind == "rev":
        return f"('{lit}' == {name})"
    members = draw(st.lists(st.sampled_from(lits), min_size=1, max_size=3))
    return f"({name} {kind} [{', '.join(repr(m) for m in members)}])"


def _extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binop = st.sampled_from(["+", "-", "*", "/", "<", "<=", ">", ">=", "==", "!=", "and", "or"])
    cmp = st.sampled_from(["<", "<=", ">", ">=", "==", "!="])
    return st.one_of(
        st.tuples(children, binop, children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(children, cmp, children, cmp, children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]} {t[3]} {t[4]})"),
        children.map(lambda c: f"(not {c})"),
        children.map(lambda c: f"(-{c})"),
        children.map(lambda c: f"abs({c})"),
        st.tuples(st.sampled_from(["present", "missing"]), children).map(
            lambda t: f"{t[0]}({t[1]})"),
        st.tuples(st.sampled_from(["min", "max"]), st.lists(children, min_size=2, max_size=3))
        .map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(children, st.sampled_from(["in", "not in"]),
                  st.lists(st.sampled_from(["0", "1", "2.5", "-1"]), min_size=1, max_size=3))
        .map(lambda t: f"({t[0]} {t[1]} [{', '.join(t[2])}])"),
    )


EXPRESSIONS = st.recursive(st.one_of(_num_leaf, _cat_test()), _extend, max_leaves=10)
_value = st.one_of(
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.sampled_from([NAN, math.inf, -math.inf, 0.0, -0.0, 1.0, 0.1, 21.0]),
)
_code = st.sampled_from([0.0, 1.0, 2.0, 5.0, NAN])


@st.composite
def _diff_row(draw: st.DrawFn) -> list[float]:
    row = [NAN] * DIFF_TABLE.row_size
    for name in NUM_NAMES:
        row[DIFF_TABLE.symbols[name].slot] = float(np.float32(draw(_value)))
    row[DIFF_TABLE.symbols["c0"].slot] = draw(_code)
    row[DIFF_TABLE.symbols["c1"].slot] = draw(_code)
    row[DIFF_TABLE.symbols["channel"].slot] = float(draw(st.integers(0, len(CHANNELS) - 1)))
    return row


@settings(max_examples=150, deadline=None)
@given(exprs=st.lists(EXPRESSIONS, min_size=1, max_size=8),
       rows=st.lists(_diff_row(), min_size=1, max_size=6))
def test_kernel_matches_reference_evaluator(exprs: list[str], rows: list[list[float]]) -> None:
    builder = ProgramBuilder(DIFF_TABLE)
    spans = np.array([builder.add(e) for e in exprs], dtype=np.int32)
    prog = builder.build()
    matrix = np.array(rows, dtype=np.float64)
    got = eval_programs(prog.ops, prog.args, prog.consts, prog.sets, spans, matrix,
                        prog.max_stack)
    slots = {name: sym.slot for name, sym in DIFF_TABLE.symbols.items()}
    for r, row in enumerate(rows):
        env = {name: row[slot] for name, slot in slots.items()}
        for p, text in enumerate(exprs):
            want = reference(ast.parse(text, mode="eval").body, env)
            have = float(got[r, p])
            assert (math.isnan(want) and math.isnan(have)) or want == have, (text, env, want,
                                                                            have)


# ---------------------------------------------------------------- arbitration

ARB_SCHEMA = FeatureSchema.from_dict({"features": [
    {"name": "age", "dtype": "int"},
    {"name": "clv", "dtype": "float"},
    {"name": "open_complaints", "dtype": "int", "default": 0},
    {"name": "segment", "dtype": "categorical", "vocabulary": ["mass", "gold"]},
    {"name": "page_type", "dtype": "categorical", "source": "context",
     "vocabulary": ["home", "product"]},
]})
T = {"default": {"title": "t", "text": "x"}}


def _action(aid: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": aid, "type": "offer", "group": "cards",
                            "channels": ["WEB", "CALL_CENTRE"], "value": 10, "treatments": T}
    base.update(kw)
    return base


def _engine(actions: list[dict[str, Any]], max_per_group: int = 0) -> tuple[Engine, Catalog]:
    actions = [*actions, _action("fb", type="info", group="info", value=1, fallback=True)]
    doc = {
        "channels": {"WEB": {"fallback": ["fb"]}, "CALL_CENTRE": {"fallback": ["fb"]}},
        "arbitration": {"max_per_group": max_per_group, "service_before_sales": {
            "assisted_channels": ["CALL_CENTRE"], "complaint_feature": "open_complaints"}},
        "actions": actions,
    }
    cat = parse_catalog(doc, ARB_SCHEMA)
    return Engine(cat, ARB_SCHEMA), cat


def _row(**values: float) -> np.ndarray:
    row = np.full(len(ARB_SCHEMA.features), np.nan, dtype=np.float32)
    row[ARB_SCHEMA.index("open_complaints")] = 0
    for k, v in values.items():
        row[ARB_SCHEMA.index(k)] = v
    return row


def test_priority_is_p_times_c_times_v_times_l() -> None:
    eng, cat = _engine([
        _action("a", value="2 * clv + 5", lever=1.5,
                context_weights=[{"key": "page_type", "value": "product", "weight": 30},
                                 {"key": "channel", "value": "WEB", "weight": 20},
                                 {"key": "channel", "value": "CALL_CENTRE", "weight": 99}]),
    ])
    r = eng.rank(_row(clv=100), np.array([0]), np.array([0.25]), "WEB",
                 {"page_type": "product"}, 3)
    assert r.context_weight[0] == pytest.approx(1.5)
    assert r.value[0] == pytest.approx(205) and r.lever[0] == 1.5
    assert r.priority[0] == pytest.approx(0.25 * 1.5 * 205 * 1.5)
    assert list(r.served_actions) == [0] and r.reason_codes(0) == ["ELIGIBLE", "TOP_PRIORITY"]
    # The request context overrides the row; without a match the weight is 1.
    r = eng.rank(_row(clv=100, page_type=1), np.array([0]), np.array([0.25]), "WEB",
                 {"page_type": "home"}, 3)
    assert r.context_weight[0] == pytest.approx(1.2)


def test_top_k_orders_by_priority_and_cuts() -> None:
    eng, _ = _engine([_action(x) for x in "abcd"])
    r = eng.rank(_row(), np.arange(4), np.array([0.1, 0.4, 0.3, 0.2]), "WEB", {}, 2)
    assert list(r.served_actions) == [1, 2]
    assert [r.stage(i) for i in range(4)] == [Stage.RANK_CUTOFF, Stage.SERVED, Stage.SERVED,
                                             Stage.RANK_CUTOFF]
    assert r.reason_codes(0) == ["ELIGIBLE", "RANK_CUTOFF"]


def test_ties_break_by_catalog_order_whatever_the_input_order() -> None:
    eng, _ = _engine([_action(x) for x in "abcd"])
    cands = np.array([3, 1, 2, 0])
    r = eng.rank(_row(), cands, np.full(4, 0.5), "WEB", {}, 4)
    assert list(r.served_actions) == [0, 1, 2, 3]
    assert list(r.served) == [3, 1, 2, 0]


def test_group_diversity() -> None:
    eng, _ = _engine([_action("a"), _action("b"), _action("c"),
                      _action("d", group="loans")], max_per_group=2)
    r = eng.rank(_row(), np.arange(4), np.array([0.9, 0.8, 0.7, 0.1]), "WEB", {}, 4)
    assert list(r.served_actions) == [0, 1, 3]
    assert r.stage(2) is Stage.GROUP_LIMIT
    assert r.reason_codes(2) == ["ELIGIBLE", "GROUP_LIMIT"]


def test_mandatory_first_regardless_of_priority() -> None:
    eng, _ = _engine([_action("a"), _action("notice", type="info", group="info", value=0,
                                            mandatory=True), _action("b")])
    r = eng.rank(_row(), np.arange(3), np.array([0.9, np.nan, 0.5]), "WEB", {}, 2)
    assert list(r.served_actions) == [1, 0]
    assert r.reason_codes(1) == ["ELIGIBLE", "MANDATORY"]
    assert r.stage(2) is Stage.RANK_CUTOFF


def test_service_before_sales_on_assisted_channels_only() -> None:
    eng, _ = _engine([_action("offer"), _action("fix", type="service", group="service")])
    cands = np.arange(2)
    prop = np.array([0.9, 0.1])
    r = eng.rank(_row(open_complaints=1), cands, prop, "CALL_CENTRE", {}, 3)
    assert r.stage(0) is Stage.SERVICE_BEFORE_SALES and list(r.served_actions) == [1]
    r = eng.rank(_row(open_complaints=1), cands, prop, "WEB", {}, 3)
    assert list(r.served_actions) == [0, 1]
    r = eng.rank(_row(open_complaints=0), cands, prop, "CALL_CENTRE", {}, 3)
    assert list(r.served_actions) == [0, 1]


def test_channel_filter_and_candidates_for() -> None:
    eng, cat = _engine([_action("web_only", channels=["WEB"]),
                        _action("widget", channels=["WEB"], placements=["chat_widget"]),
                        _action("both")])
    fb = cat.index_of("fb")
    assert list(eng.candidates_for("CALL_CENTRE")) == [2, fb]
    assert list(eng.candidates_for("WEB")) == [0, 1, 2, fb]
    assert list(eng.candidates_for("WEB", "chat_widget")) == [0, 1, 2, fb]
    assert list(eng.candidates_for("WEB", "hero")) == [0, 2, fb]
    assert eng.fallback("WEB") == [fb]
    with pytest.raises(ValueError, match="unknown channel 'FAX'"):
        eng.candidates_for("FAX")
    r = eng.rank(_row(), np.array([0, 2]), np.array([0.9, 0.1]), "CALL_CENTRE", {}, 3)
    assert r.stage(0) is Stage.CHANNEL_NOT_ALLOWED and list(r.served_actions) == [2]


def test_rule_stages_validity_policy_and_invalid_inputs() -> None:
    eng, _ = _engine([
        _action("elig", eligibility="age >= 21"),
        _action("appl", applicability="segment == 'gold'"),
        _action("suit", suitability="missing(clv) or clv > 0"),
        _action("later", validity={"start": "2030-01-01"}),
        _action("blocked"),
        _action("noval", value="clv * 2"),
        _action("noprop"),
    ])
    now = 1_800_000_000.0  # 2027
    block = np.array([0, 0, 0, 0, int(Stage.BUDGET), 0, 0])
    r = eng.rank(_row(age=18, segment=0, clv=-1), np.arange(7),
                 np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, np.nan]), "WEB", {}, 10,
                 policy_block=block, now_s=now)
    assert [r.stage(i) for i in range(7)] == [
        Stage.RULE_ELIGIBILITY, Stage.RULE_APPLICABILITY, Stage.RULE_SUITABILITY,
        Stage.OUTSIDE_VALIDITY, Stage.BUDGET, Stage.SERVED, Stage.INVALID_PROPENSITY]
    assert r.reason_codes(0) == ["RULE_ELIGIBILITY"]
    r = eng.rank(_row(age=30, segment=1), np.arange(7), np.full(7, 0.5), "WEB", {}, 10,
                 now_s=now + 1e9)
    assert r.stage(5) is Stage.VALUE_UNAVAILABLE  # clv missing -> value unknown
    assert all(r.stage(i) is Stage.SERVED for i in (0, 1, 2, 3, 4, 6))
    with pytest.raises(ValueError, match="not policy stages"):
        eng.rank(_row(), np.arange(1), np.ones(1), "WEB", {}, 1, policy_block=np.array([3]))
    with pytest.raises(ValueError, match="propensities"):
        eng.rank(_row(), np.arange(2), np.ones(1), "WEB", {}, 1)
    with pytest.raises(ValueError, match="out of range"):
        eng.rank(_row(), np.array([99]), np.ones(1), "WEB", {}, 1)


@settings(max_examples=60, deadline=None)
@given(
    props=st.lists(st.sampled_from([0.1, 0.2, 0.5, 0.9, NAN]), min_size=6, max_size=6),
    limit=st.integers(0, 7),
    k=st.integers(0, 3),
    order=st.permutations(list(range(6))),
)
def test_arbitration_matches_python_reference(props: list[float], limit: int, k: int,
                                              order: list[int]) -> None:
    groups = ["cards", "cards", "loans", "cards", "loans", "info"]
    eng, cat = _engine([_action(f"a{i}", group=g, value=10 + i % 2, mandatory=(i == 5),
                                type="info" if i == 5 else "offer")
                        for i, g in enumerate(groups)], max_per_group=k)
    cands = np.array(order)
    prop = np.array([props[c] for c in order])
    r = eng.rank(_row(), cands, prop, "WEB", {}, limit)
    # Reference: mandatory first (catalog order), then priority desc, then catalog index.
    alive = [c for c in range(6) if cat.actions[c].mandatory or not math.isnan(props[c])]
    alive.sort(key=lambda c: (not cat.actions[c].mandatory,
                              0 if cat.actions[c].mandatory else -props[c] * (10 + c % 2), c))
    served: list[int] = []
    per_group: dict[str, int] = {}
    for c in alive:
        a = cat.actions[c]
        if not a.mandatory and k and per_group.get(a.group, 0) >= k:
            continue
        if len(served) < limit:
            served.append(c)
            if not a.mandatory:
                per_group[a.group] = per_group.get(a.group, 0) + 1
    assert list(r.served_actions) == served


def test_requests_never_compile_after_warm_up() -> None:
    eng, _ = _engine([_action("a", eligibility="age > 1", value="clv + 1"), _action("b")])
    eng.warm_up()
    before = kernel.compiled_specialisations()
    cands = np.array([0, 1], dtype=np.int32)
    cands.setflags(write=False)
    prop = np.array([0.5, 0.25], dtype=np.float32)[::1]
    eng.rank(_row(age=3, clv=2), cands, prop, "WEB", {}, 1)
    eng.rank(_row(), [1, 0], [0.1, 0.2], "CALL_CENTRE", {"page_type": "home"}, 5,  # type: ignore[arg-type]
             policy_block=np.array([6, 0], dtype=np.int64))
    assert kernel.compiled_specialisations() == before == 1


def test_removed_by_and_detail_explain_removals() -> None:
    eng, cat = _engine([_action("a", eligibility="age >= 21"), _action("b"), _action("c")],
                       max_per_group=1)
    r = eng.rank(_row(age=18), np.arange(3), np.array([0.9, 0.5, 0.4]), "WEB", {}, 3)
    assert r.removed_by(0) == "RULE_ELIGIBILITY"
    assert eng.detail(r, 0) == "eligibility: age >= 21"
    assert r.removed_by(1) == "" and eng.detail(r, 1) == ""
    assert r.removed_by(2) == "GROUP_LIMIT" and "'cards'" in eng.detail(r, 2)
    assert cat.actions[0].treatment_for("WEB") == {"title": "t", "text": "x"}
