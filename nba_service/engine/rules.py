"""The catalog's rule language, parsed with `ast` into a strict whitelist and compiled to postfix.

An expression such as ``age >= 21 and segment in ['gold', 'vip']`` becomes a flat postfix
program of (opcode, operand, constant) triples. All programs of a catalog live in the same
contiguous arrays (`Programs`), so one Numba kernel evaluates every candidate's rules against
the customer row without touching Python objects. Nothing here ever calls `eval`.

Values on the evaluation stack are float64; booleans are 1.0 / 0.0 and "unknown" is NaN
(three-valued logic, see docs/catalog.md).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from features.schema import DType, FeatureSchema, Source

__all__ = [
    "Op",
    "Programs",
    "ProgramBuilder",
    "RuleError",
    "Symbol",
    "SymbolTable",
]

FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "min": (2, None), "max": (2, None), "abs": (1, 1), "present": (1, 1), "missing": (1, 1),
}


class Op(IntEnum):
    CONST = 0  # push const
    LOAD = 1  # push row[arg]
    ADD = 2
    SUB = 3
    MUL = 4
    DIV = 5
    NEG = 6
    EQ = 7
    NE = 8
    LT = 9
    LE = 10
    GT = 11
    GE = 12
    AND = 13
    OR = 14
    NOT = 15
    MIN = 16
    MAX = 17
    ABS = 18
    PRESENT = 19
    MISSING = 20
    IN = 21  # pop x; push x in sets[arg : arg + int(const)]
    NOT_IN = 22


_COMPARE_OPS: dict[type[ast.cmpop], Op] = {
    ast.Eq: Op.EQ,
    ast.NotEq: Op.NE,
    ast.Lt: Op.LT,
    ast.LtE: Op.LE,
    ast.Gt: Op.GT,
    ast.GtE: Op.GE,
}
_BIN_OPS: dict[type[ast.operator], Op] = {
    ast.Add: Op.ADD,
    ast.Sub: Op.SUB,
    ast.Mult: Op.MUL,
    ast.Div: Op.DIV,
}


class RuleError(ValueError):
    """An expression is not valid; carries the expression text and the 0-based column."""

    def __init__(self, message: str, expression: str, col: int) -> None:
        self.reason = message
        self.expression = expression
        self.col = col
        caret = " " * max(col, 0) + "^"
        super().__init__(f"{message} (column {col})\n    {expression}\n    {caret}")


@dataclass(frozen=True)
class Symbol:
    """A name usable in expressions: the slot of the evaluation row it reads."""

    name: str
    slot: int
    vocabulary: tuple[str, ...] = ()  # non-empty -> categorical: compared with string literals

    @property
    def categorical(self) -> bool:
        return bool(self.vocabulary)

    def code(self, category: str) -> int | None:
        try:
            return self.vocabulary.index(category)
        except ValueError:
            return None


@dataclass(frozen=True)
class SymbolTable:
    """Names known to the compiler, plus names that exist but may not be used (with why)."""

    symbols: Mapping[str, Symbol]
    forbidden: Mapping[str, str] = field(default_factory=dict)
    row_size: int = 0

    @classmethod
    def from_schema(cls, schema: FeatureSchema, channels: Sequence[str]) -> SymbolTable:
        """Every non-ACTION feature at its model column; `channel` in an extra last slot.

        The request's channel gets its own slot (index = number of columns) and the catalog's
        channel list as vocabulary, so rules can test it even when the schema has no channel
        column, and it is never missing.
        """
        symbols: dict[str, Symbol] = {}
        forbidden: dict[str, str] = {}
        for i, spec in enumerate(schema.features):
            if spec.source is Source.ACTION:
                forbidden[spec.name] = (
                    f"{spec.name!r} is an attribute of the candidate action, not of the customer; "
                    "rules already belong to one action"
                )
                continue
            vocab = spec.vocabulary if spec.dtype is DType.CATEGORICAL else ()
            symbols[spec.name] = Symbol(spec.name, i, vocab)
        n = len(schema.features)
        symbols["channel"] = Symbol("channel", n, tuple(channels))
        return cls(symbols=symbols, forbidden=forbidden, row_size=n + 1)


@dataclass(frozen=True)
class Programs:
    """All compiled programs of a catalog in contiguous arrays (what the kernel reads)."""

    ops: np.ndarray  # int32 opcodes
    args: np.ndarray  # int32 operands (row slot, set offset)
    consts: np.ndarray  # float64 constants (CONST value, IN set length)
    sets: np.ndarray  # float64 members of `in` lists
    max_stack: int


@dataclass
class _Emitter:
    ops: list[int] = field(default_factory=list)
    args: list[int] = field(default_factory=list)
    consts: list[float] = field(default_factory=list)
    depth: int = 0
    max_depth: int = 0

    def emit(self, op: Op, arg: int = 0, const: float = 0.0) -> None:
        self.ops.append(int(op))
        self.args.append(arg)
        self.consts.append(const)
        if op in (Op.CONST, Op.LOAD):
            self.depth += 1
        elif op in _BINARY:
            self.depth -= 1
        self.max_depth = max(self.max_depth, self.depth)


_BINARY = frozenset(
    {Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE, Op.AND, Op.OR,
     Op.MIN, Op.MAX}
)

_NUM = "number"


def f32(value: float) -> float:
    """Literals are rounded to float32 like the feature row, so `churn_risk == 0.1` can hold."""
    return float(np.float32(value))


class _Compiler:
    def __init__(self, text: str, table: SymbolTable, out: _Emitter, sets: list[float]) -> None:
        self.text = text
        self.table = table
        self.out = out
        self.sets = sets

    def fail(self, node: ast.AST, message: str) -> RuleError:
        return RuleError(message, self.text, getattr(node, "col_offset", 0))

    # Each visit returns the kind of value it left on the stack: "number" or a categorical Symbol.
    def value(self, node: ast.expr) -> str | Symbol:
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool):
                self.out.emit(Op.CONST, 0, 1.0 if v else 0.0)
                return _NUM
            if isinstance(v, int | float):
                self.out.emit(Op.CONST, 0, f32(v))
                return _NUM
            if isinstance(v, str):
                raise self.fail(
                    node, f"string {v!r} can only be compared with a categorical feature"
                )
            raise self.fail(node, f"literal {v!r} is not allowed")
        if isinstance(node, ast.Name):
            sym = self.table.symbols.get(node.id)
            if sym is None:
                why = self.table.forbidden.get(node.id)
                raise self.fail(node, why or f"unknown feature {node.id!r}")
            self.out.emit(Op.LOAD, sym.slot)
            return sym
        if isinstance(node, ast.BoolOp):
            op = Op.AND if isinstance(node.op, ast.And) else Op.OR
            for i, operand in enumerate(node.values):
                self.number(operand)
                if i:
                    self.out.emit(op)
            return _NUM
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                self.number(node.operand)
                self.out.emit(Op.NOT)
                return _NUM
            if isinstance(node.op, ast.USub):
                lit = _literal(node)
                if _is_number(lit):
                    self.out.emit(Op.CONST, 0, f32(float(lit)))  # type: ignore[arg-type]
                else:
                    self.number(node.operand)
                    self.out.emit(Op.NEG)
                return _NUM
            if isinstance(node.op, ast.UAdd):
                return self.number(node.operand)
            raise self.fail(node, "operator '~' is not allowed")
        if isinstance(node, ast.BinOp):
            bop = _BIN_OPS.get(type(node.op))
            if bop is None:
                raise self.fail(node, f"operator {type(node.op).__name__} is not allowed "
                                      "(use + - * /)")
            self.number(node.left)
            self.number(node.right)
            self.out.emit(bop)
            return _NUM
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.fail(node, f"{_describe(node)} is not allowed")

    def number(self, node: ast.expr) -> str:
        kind = self.value(node)
        if isinstance(kind, Symbol) and kind.categorical:
            raise self.fail(
                node,
                f"categorical feature {kind.name!r} can only be compared with ==, != or in "
                "against string literals, or tested with present()/missing()",
            )
        return _NUM

    def call(self, node: ast.Call) -> str:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise self.fail(node, f"call of {_describe(node.func)} is not allowed "
                                  f"(functions: {', '.join(sorted(FUNCTIONS))})")
        name = node.func.id
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(node, f"{name}() takes plain positional arguments only")
        lo, hi = FUNCTIONS[name]
        n = len(node.args)
        if n < lo or (hi is not None and n > hi):
            want = f"exactly {lo}" if lo == hi else f"at least {lo}"
            raise self.fail(node, f"{name}() takes {want} argument(s), got {n}")
        if name in ("present", "missing"):
            self.value(node.args[0])  # categoricals are fine here
            self.out.emit(Op.PRESENT if name == "present" else Op.MISSING)
            return _NUM
        if name == "abs":
            self.number(node.args[0])
            self.out.emit(Op.ABS)
            return _NUM
        op = Op.MIN if name == "min" else Op.MAX
        for i, arg in enumerate(node.args):
            self.number(arg)
            if i:
                self.out.emit(op)
        return _NUM

    def compare(self, node: ast.Compare) -> str:
        left = node.left
        for i, (cmp, right) in enumerate(zip(node.ops, node.comparators, strict=True)):
            self.compare_pair(node, left, cmp, right)
            if i:
                self.out.emit(Op.AND)  # a < b < c  ==  (a < b) and (b < c)
            left = right
        return _NUM

    def compare_pair(self, node: ast.Compare, left: ast.expr, cmp: ast.cmpop,
                     right: ast.expr) -> None:
        if isinstance(cmp, ast.In | ast.NotIn):
            self.membership(left, cmp, right)
            return
        op = _COMPARE_OPS.get(type(cmp))
        if op is None:
            raise self.fail(node, f"comparison {type(cmp).__name__} is not allowed")
        l_str, r_str = _is_str(left), _is_str(right)
        if l_str and r_str:
            raise self.fail(left, "comparing two string literals is always constant")
        if l_str or r_str:
            lit, other = (left, right) if l_str else (right, left)
            if op not in (Op.EQ, Op.NE):
                raise self.fail(lit, "categories can only be compared with == or !=")
            sym = self.categorical(other)
            self.out.emit(Op.CONST, 0, float(self.code_of(sym, lit)))
            self.out.emit(op)
            return
        self.number(left)
        self.number(right)
        self.out.emit(op)

    def categorical(self, node: ast.expr) -> Symbol:
        kind = self.value(node)
        if not isinstance(kind, Symbol) or not kind.categorical:
            raise self.fail(
                node, "a string literal can only be compared with a categorical feature"
            )
        return kind

    def code_of(self, sym: Symbol, lit: ast.expr) -> int:
        assert isinstance(lit, ast.Constant)
        code = sym.code(str(lit.value))
        if code is None:
            raise self.fail(lit, f"{lit.value!r} is not a category of {sym.name!r} "
                                 f"(known: {', '.join(sym.vocabulary)})")
        return code

    def membership(self, left: ast.expr, cmp: ast.cmpop, right: ast.expr) -> None:
        if not isinstance(right, ast.List | ast.Tuple | ast.Set):
            raise self.fail(right, "'in' needs a literal list, e.g. x in ['a', 'b']")
        if not right.elts:
            raise self.fail(right, "'in' needs a non-empty list")
        values = [_literal(e) for e in right.elts]
        bad = next((e for e, v in zip(right.elts, values, strict=True) if v is None), None)
        if bad is not None:
            raise self.fail(bad, "'in' lists may only contain literals")
        members: list[float] = []
        if all(isinstance(v, str) for v in values):
            sym = self.categorical(left)
            members = [float(self.code_of(sym, e)) for e in right.elts]
        elif all(_is_number(v) for v in values):
            self.number(left)
            members = [f32(v) for v in values if isinstance(v, int | float)]
        else:
            raise self.fail(right, "'in' lists must be all strings or all numbers")
        offset = len(self.sets)
        self.sets.extend(members)
        op = Op.IN if isinstance(cmp, ast.In) else Op.NOT_IN
        self.out.emit(op, offset, float(len(members)))


def _literal(node: ast.expr) -> str | int | float | None:
    """The value of a literal list member (a negative number is a unary minus node)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) \
            and isinstance(node.operand, ast.Constant):
        v = node.operand.value
        if isinstance(v, int | float) and not isinstance(v, bool):
            return -v
    return None


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_str(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _describe(node: ast.AST) -> str:
    names = {
        ast.Attribute: "attribute access",
        ast.Subscript: "subscript",
        ast.Lambda: "lambda",
        ast.IfExp: "conditional expression",
        ast.ListComp: "comprehension",
        ast.GeneratorExp: "comprehension",
        ast.Dict: "dict literal",
        ast.List: "list literal outside 'in'",
        ast.JoinedStr: "f-string",
        ast.NamedExpr: "assignment",
        ast.Await: "await",
    }
    if isinstance(node, ast.Name):
        return repr(node.id)
    return names.get(type(node), type(node).__name__)


def parse(text: str) -> ast.expr:
    """Parse one expression; a syntax error becomes a RuleError with its column."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        if not exc.offset:  # the parser ran off the end of the text
            raise RuleError("syntax error: unexpected end of expression", text, len(text)) \
                from None
        raise RuleError(f"syntax error: {exc.msg}", text, exc.offset - 1) from None
    return tree.body


class ProgramBuilder:
    """Accumulates compiled expressions into one set of contiguous arrays."""

    def __init__(self, table: SymbolTable) -> None:
        self.table = table
        self._out = _Emitter()
        self._sets: list[float] = []

    def add(self, text: str) -> tuple[int, int]:
        """Compile `text`; return its (start, end) span in the program arrays.

        Newlines (from multi-line YAML strings) count as spaces so columns stay meaningful.
        """
        flat = text.replace("\r", " ").replace("\n", " ").strip()
        if not flat:
            raise RuleError("empty expression", text, 0)
        node = parse(flat)
        start = len(self._out.ops)
        n_sets = len(self._sets)
        self._out.depth = 0
        try:
            _Compiler(flat, self.table, self._out, self._sets).number(node)
        except RuleError:
            # Keep the arrays consistent: a failed expression leaves nothing behind.
            del self._out.ops[start:], self._out.args[start:], self._out.consts[start:]
            del self._sets[n_sets:]
            raise
        if self._out.depth != 1:  # pragma: no cover - a compiler bug, not a user error
            raise AssertionError(f"stack depth {self._out.depth} after {flat!r}")
        return start, len(self._out.ops)

    def build(self) -> Programs:
        return Programs(
            ops=np.asarray(self._out.ops, dtype=np.int32),
            args=np.asarray(self._out.args, dtype=np.int32),
            consts=np.asarray(self._out.consts, dtype=np.float64),
            sets=np.asarray(self._sets if self._sets else [math.nan], dtype=np.float64),
            max_stack=max(self._out.max_depth, 1),
        )
