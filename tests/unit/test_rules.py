"""Rule compiler: the whitelist, error positions, and the documented semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from features.schema import FeatureSchema
from nba_service.engine.catalog import CHANNELS
from nba_service.engine.kernel import eval_programs
from nba_service.engine.rules import Op, ProgramBuilder, RuleError, SymbolTable

SCHEMA = FeatureSchema.from_dict({"features": [
    {"name": "age", "dtype": "int"},
    {"name": "churn_risk", "dtype": "float"},
    {"name": "has_card", "dtype": "bool"},
    {"name": "segment", "dtype": "categorical", "vocabulary": ["mass", "gold", "vip"]},
    {"name": "page_type", "dtype": "categorical", "source": "context",
     "vocabulary": ["home", "product"]},
    {"name": "action_value", "dtype": "float", "source": "action"},
]})
TABLE = SymbolTable.from_schema(SCHEMA, CHANNELS)
NAN = math.nan


def evaluate(text: str, **values: float) -> float:
    """Compile one expression and run it in the kernel on a row built from `values`."""
    builder = ProgramBuilder(TABLE)
    span = builder.add(text)
    prog = builder.build()
    row = np.full((1, TABLE.row_size), NAN)
    for name, v in values.items():
        row[0, TABLE.symbols[name].slot] = v
    spans = np.array([span], dtype=np.int32)
    out = eval_programs(prog.ops, prog.args, prog.consts, prog.sets, spans, row, prog.max_stack)
    return float(out[0, 0])


def compile_error(text: str) -> RuleError:
    with pytest.raises(RuleError) as info:
        ProgramBuilder(TABLE).add(text)
    return info.value


@pytest.mark.parametrize(
    ("text", "needle", "col"),
    [
        ("age.real > 1", "attribute access", 0),
        ("segment[0] == 'g'", "subscript", 0),
        ("(lambda: 1)()", "call of lambda", 0),
        ("__import__('os')", "call of '__import__'", 0),
        ("open('x')", "call of 'open'", 0),
        ("age > 1 and len(segment)", "call of 'len'", 12),
        ("age if has_card else 3", "conditional expression", 0),
        ("age ** 2 > 3", "operator Pow", 0),
        ("age % 2 == 0", "operator Mod", 0),
        ("x > 1", "unknown feature 'x'", 0),
        ("age > 1 and income > 3", "unknown feature 'income'", 12),
        ("action_value > 1", "attribute of the candidate action", 0),
        ("segment == 'platinum'", "'platinum' is not a category of 'segment'", 11),
        ("segment > 'gold'", "only be compared with == or !=", 10),
        ("segment + 1 > 2", "categorical feature 'segment'", 0),
        ("age == 'gold'", "string literal can only be compared with a categorical", 0),
        ("'a' == 'a'", "two string literals", 0),
        ("segment in ['gold', 3]", "all strings or all numbers", 11),
        ("age in [1, age]", "may only contain literals", 11),
        ("age in []", "non-empty list", 7),
        ("segment in 'gold'", "literal list", 11),
        ("min(age) > 1", "at least 2", 0),
        ("abs(age, 1) > 1", "exactly 1", 0),
        ("max(age, key=abs) > 1", "positional arguments only", 0),
        ("age > None", "literal None is not allowed", 6),
        ("'gold'", "string 'gold' can only be compared", 0),
        ("age >", "unexpected end", 5),
        ("age > > 3", "syntax error: invalid syntax", 6),
        ("age is None", "comparison Is", 0),
        ("[x for x in age]", "comprehension", 0),
        ("(age := 3) > 1", "assignment", 1),
        ("~age", "'~'", 0),
    ],
)
def test_whitelist_rejects_with_position(text: str, needle: str, col: int) -> None:
    err = compile_error(text)
    assert needle in err.reason, err
    assert err.col == col, err
    assert err.expression == text
    assert text in str(err) and f"(column {col})" in str(err)


def test_failed_expression_leaves_builder_consistent() -> None:
    builder = ProgramBuilder(TABLE)
    first = builder.add("age in [1, 2]")
    with pytest.raises(RuleError):
        builder.add("age > 1 and segment in ['nope']")
    second = builder.add("segment in ['gold']")
    prog = builder.build()
    assert first == (0, 2) and second == (2, 4)
    assert list(prog.sets) == [1.0, 2.0, 1.0]  # the failed list was rolled back
    assert prog.ops[3] == Op.IN and prog.args[3] == 2


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("age >= 21 and not has_card", {"age": 30, "has_card": 0}, 1.0),
        ("age >= 21 and not has_card", {"age": 30, "has_card": 1}, 0.0),
        ("18 <= age < 26", {"age": 26}, 0.0),
        ("18 <= age < 26", {"age": 18}, 1.0),
        ("segment in ['gold', 'vip']", {"segment": 2}, 1.0),
        ("segment not in ['gold', 'vip']", {"segment": 0}, 1.0),
        ("'gold' == segment", {"segment": 1}, 1.0),
        ("channel == 'EMAIL'", {"channel": CHANNELS.index("EMAIL")}, 1.0),
        ("channel != 'EMAIL' or has_card", {"channel": CHANNELS.index("EMAIL"), "has_card": 0},
         0.0),
        ("0.05 * age + 20", {"age": 100}, float(np.float32(0.05)) * 100 + 20),
        ("min(age, 10, 3) + max(age, 50) + abs(-age)", {"age": 20}, 3 + 50 + 20),
        ("age / 0", {"age": 1}, NAN),
        ("churn_risk == 0.1", {"churn_risk": float(np.float32(0.1))}, 1.0),
        ("-age", {"age": 4}, -4.0),
        ("True and not False", {}, 1.0),
        # Missing values: comparisons are unknown, unknown never passes, presence tests decide.
        ("age > 18", {}, NAN),
        ("not (age > 18)", {}, NAN),
        ("age > 18 or has_card", {"has_card": 1}, 1.0),
        ("age > 18 and has_card", {"has_card": 0}, 0.0),
        ("age > 18 and has_card", {"has_card": 1}, NAN),
        ("missing(age) or age > 18", {}, 1.0),
        ("present(segment) and segment == 'gold'", {}, 0.0),
        ("segment in ['gold']", {}, NAN),
        ("min(age, 3)", {}, NAN),
        ("age > 18", {"age": math.inf}, 1.0),
    ],
)
def test_semantics(text: str, values: dict[str, float], expected: float) -> None:
    got = evaluate(text, **values)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, rel=1e-12)


def test_multiline_expression_columns() -> None:
    err = compile_error("age > 1\nand bogus")
    assert err.col == 12 and "unknown feature 'bogus'" in err.reason


def test_stack_depth_is_tracked() -> None:
    builder = ProgramBuilder(TABLE)
    builder.add("age + (age + (age + (age + 1)))")
    assert builder.build().max_stack == 5
