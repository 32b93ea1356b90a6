"""The hidden response model: each customer's true probability of accepting each action.

logit = base(type) + term(action, customer, session) + channel(type) + context effects
        - complaint / arrears penalties on sales offers + hidden traits;
p = sigmoid(logit), then x FATIGUE per earlier impression of the same action (the simulator).
Actions this file does not know by id fall back to a term for their group, so a catalog may
add actions without touching the simulator.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from features.schema import FeatureSchema
from training.ground_truth import (
    CHANNEL_EFFECT,
    CHAT_ELSEWHERE,
    CONSENT,
    GROUPS,
    N_TRAITS,
    TYPE_BASE,
    TYPE_CHANNEL,
    Table,
    bump,
    numeric,
    sigmoid,
    stable_uniforms,
)


class View:
    """Feature values as the truth sees them: missing values replaced by schema defaults,
    `channel` and `context` overriding the table's own columns."""

    def __init__(
        self, table: Table, schema: FeatureSchema, channel: str | np.ndarray | None,
        context: Mapping[str, object] | None,
    ) -> None:
        self.table, self.schema, self.n = table, schema, len(table)
        self._override: dict[str, object] = dict(context or {})
        if channel is not None:
            self._override["channel"] = channel
        self._cache: dict[str, np.ndarray] = {}

    def num(self, name: str) -> np.ndarray:
        if name not in self._cache:
            spec = self.schema.get(name)
            if name in self._override:
                col = np.broadcast_to(np.asarray(self._override[name], dtype=object), (self.n,))
                vals = numeric(Table({name: np.array(col, dtype=object)}), name)
            else:
                vals = numeric(self.table, name)
            default = spec.default_encoded if spec is not None else np.nan
            self._cache[name] = np.where(np.isnan(vals), default, vals)
        return self._cache[name]

    def flag(self, name: str) -> np.ndarray:
        return (np.nan_to_num(self.num(name)) > 0.5).astype(np.float64)

    def cat(self, name: str) -> np.ndarray:
        key = "cat:" + name
        if key not in self._cache:
            spec = self.schema.get(name)
            if name in self._override:
                col = np.broadcast_to(np.asarray(self._override[name], dtype=object), (self.n,))
            elif name in self.table:
                col = self.table[name]
            else:
                col = np.full(self.n, None, dtype=object)
            default = spec.default if spec is not None else None
            self._cache[key] = np.array([default if v is None else v for v in col], dtype=object)
        return self._cache[key]

    def is_(self, name: str, *values: str) -> np.ndarray:
        return np.isin(self.cat(name), values).astype(np.float64)

    def traits(self, seed: int) -> np.ndarray:
        """(n, N_TRAITS) standard normals: responsiveness, then a taste per action group."""
        if "customer_id" not in self.table:
            return np.zeros((self.n, N_TRAITS))
        u = stable_uniforms(self.table["customer_id"].tolist(), seed, 2 * N_TRAITS)
        return np.sqrt(-2 * np.log(u[:, ::2])) * np.cos(2 * np.pi * u[:, 1::2])


Term = Callable[[View], np.ndarray]


def _terms() -> dict[str, Term]:
    """Per-action effects on the logit; the interactions a model has to discover."""

    def z_inc(v: View) -> np.ndarray:
        return (np.log(np.maximum(v.num("income"), 1000.0)) - 10.4) / 0.5

    def z_cs(v: View) -> np.ndarray:
        return (v.num("credit_score") - 650) / 80

    def no(v: View, name: str) -> np.ndarray:
        return 1.0 - v.flag(name)

    def thousands(v: View, name: str) -> np.ndarray:
        return np.log1p(np.maximum(v.num(name), 0.0) / 1000)

    def age(v: View) -> np.ndarray:
        return v.num("age")

    return {
        "card_gold": lambda v: (1.0 * no(v, "has_credit_card") + 0.7 * z_inc(v) + 0.5 * z_cs(v)
                                + 0.6 * v.is_("segment", "affluent", "gold")),
        "card_platinum": lambda v: (0.6 * no(v, "has_credit_card") + 1.2 * z_inc(v)
                                    + 0.6 * z_cs(v) + 1.0 * v.is_("segment", "gold", "vip")
                                    - 0.8 * v.is_("segment", "mass", "student")),
        "card_student": lambda v: (2.8 * (age(v) < 26) + 1.5 * v.is_("segment", "student")
                                   + 1.2 * no(v, "has_credit_card") - 2.5 * (age(v) > 32) - 1.0),
        "card_cashback": lambda v: (0.9 * no(v, "has_credit_card") + 0.8 * v.flag("digital_active")
                                    + 0.6 * (v.num("cart_value") > 0) + 0.3 * bump(age(v), 35, 12)),
        "card_balance_transfer": lambda v: (1.6 * v.flag("has_credit_card") - 0.8
                                            + 0.8 * (v.num("balance") < 500) + 0.4 * z_cs(v)),
        "loan_personal": lambda v: (0.9 * no(v, "has_personal_loan") + 0.5 * z_cs(v)
                                    + 0.6 * (v.num("balance") < 1000)
                                    + 0.4 * bump(age(v), 35, 12) - 0.5),
        "loan_car": lambda v: (1.0 * bump(age(v), 33, 10) + 0.4 * z_inc(v) + 0.4 * z_cs(v)
                               + 0.5 * v.is_("page_type", "product") - 0.4),
        "loan_topup": lambda v: 2.2 * v.flag("has_personal_loan") - 1.2 + 0.4 * z_cs(v),
        "mortgage_first_home": lambda v: (2.0 * no(v, "has_mortgage") * bump(age(v), 32, 7)
                                          + 0.8 * z_inc(v) + 0.5 * z_cs(v) - 1.2
                                          + 0.4 * v.is_("page_type", "product", "pricing")),
        "mortgage_remortgage": lambda v: (2.0 * v.flag("has_mortgage") - 1.2
                                          + 0.4 * (v.num("tenure_months") > 60)
                                          + 0.8 * v.num("churn_risk")),
        "savings_bonus": lambda v: (2.0 * no(v, "has_savings")
                                    * np.clip(thousands(v, "balance") - 1.2, 0, 2)
                                    + 0.3 * z_inc(v) - 0.6),
        "savings_fixed_term": lambda v: (1.0 * v.flag("has_savings")
                                         * np.clip(thousands(v, "savings_balance") - 1.5, 0, 3)
                                         + 0.4 * bump(age(v), 60, 15) - 0.7),
        "savings_kids": lambda v: 1.8 * bump(age(v), 38, 7) + 0.4 * z_inc(v) - 0.9,
        "invest_funds": lambda v: (1.2 * v.is_("segment", "affluent", "gold", "vip")
                                   + 0.3 * thousands(v, "savings_balance")
                                   + 0.4 * v.flag("digital_active") - 0.6 * (age(v) < 25) - 0.8),
        "insurance_home": lambda v: (2.2 * v.flag("has_mortgage") * no(v, "has_insurance")
                                     - 0.9),
        "insurance_travel": lambda v: (0.6 * z_inc(v) + 0.6 * bump(age(v), 30, 12)
                                       + 0.4 * v.flag("digital_active") - 0.4),
        "insurance_life": lambda v: (1.3 * bump(age(v), 42, 10) + 0.8 * v.flag("has_mortgage")
                                     - 0.8 * v.flag("has_insurance") - 0.5),
        "mobile_upgrade": lambda v: (1.8 * v.flag("has_mobile_plan") - 1.1
                                     + 0.5 * (age(v) < 35)),
        "mobile_family_plan": lambda v: (1.2 * bump(age(v), 40, 8)
                                         + 0.6 * no(v, "has_mobile_plan") - 0.6),
        "mobile_data_boost": lambda v: (1.6 * v.flag("has_mobile_plan") * (age(v) < 30)
                                        + 0.6 * (v.num("session_page_views") > 6) - 0.7),
        "retention_fee_waiver": lambda v: (3.5 * v.num("churn_risk")
                                           + 0.8 * (v.num("payment_overdue_days") > 0)
                                           + 0.4 * (v.num("open_complaints") > 0) - 1.5),
        "retention_rate_match": lambda v: (3.5 * v.num("churn_risk")
                                           * np.maximum(v.flag("has_mortgage"),
                                                        v.flag("has_personal_loan"))
                                           + 0.3 * z_inc(v) - 1.2),
        "retention_loyalty_bonus": lambda v: (3.0 * v.num("churn_risk")
                                              + 0.8 * (v.num("tenure_months") > 84) - 1.2),
        "service_resolve_complaint": lambda v: (
            3.0 * (v.num("open_complaints") > 0) + 0.4 * np.minimum(v.num("open_complaints"), 3)
            + 1.0 * (v.num("hours_since_complaint") < 48) - 1.8),
        "service_payment_reminder": lambda v: (2.4 * (v.num("payment_overdue_days") > 0) - 1.4
                                               - 0.02 * np.minimum(v.num("payment_overdue_days"),
                                                                   60)),
        "service_payment_plan": lambda v: (1.8 * (v.num("payment_overdue_days") > 30)
                                           + 0.6 * (v.num("payment_overdue_days") > 0)
                                           - 0.3 * z_inc(v) - 1.4),
        "service_update_contact": lambda v: (0.8 * (v.num("days_since_last_contact") > 180)
                                             - 0.6),
        "service_security_check": lambda v: (2.2 * (v.num("failed_logins") > 0)
                                             + 0.3 * np.minimum(v.num("errors_seen"), 4) - 1.0),
        "service_app_onboarding": lambda v: (1.6 * no(v, "digital_active")
                                             + 0.5 * v.is_("channel", "MOBILE_APP")
                                             - 0.6 * (age(v) > 65) - 0.8),
        "info_fraud_awareness": lambda v: 0.5 * (age(v) > 60) + 0.9 * (v.num("failed_logins") > 0),
        "info_new_terms": lambda v: 0.3 * (v.num("tenure_months") > 120) - 0.2,
        "info_branch_hours": lambda v: 0.8 * (age(v) > 60) + 0.5 * no(v, "digital_active"),
        "chat_invite_sales": lambda v: (0.25 * np.minimum(v.num("session_page_views"), 12)
                                        + 0.3 * np.log1p(v.num("session_dwell_s") / 60)
                                        + 1.0 * (v.num("cart_value") > 0)
                                        + 0.8 * v.is_("page_type", "pricing", "checkout") - 1.4),
        "chat_invite_service": lambda v: (0.7 * np.minimum(v.num("errors_seen"), 4)
                                          + 1.0 * v.is_("page_type", "support")
                                          + 0.8 * (v.num("open_complaints") > 0)
                                          + 0.6 * (v.num("failed_logins") > 0) - 0.9),
    }


TERMS = _terms()


class ResponseModel:
    """The truth for one catalog: logits per (row, action), values per (row, action)."""

    def __init__(
        self, actions: Sequence[Any], seed: int,
        value_fns: Sequence[Callable[[View], np.ndarray]],
    ) -> None:
        self.seed = seed
        self.types = [str(a.type) for a in actions]
        self.groups = [str(a.group) for a in actions]
        self.terms: list[Term | None] = [TERMS.get(str(a.id)) for a in actions]
        self.value_fns = list(value_fns)
        self.n_actions = len(actions)

    def logits(self, view: View, idx: np.ndarray) -> np.ndarray:
        n = view.n
        out = np.empty((n, len(idx)))
        traits = view.traits(self.seed)
        channel = view.cat("channel")
        responsiveness = 0.5 * traits[:, 0]
        complaint = (view.num("open_complaints") > 0).astype(np.float64)
        arrears = np.minimum(view.num("payment_overdue_days"), 60)
        hour = view.num("hour_of_day")
        evening = (np.isin(channel, ("WEB", "MOBILE_APP")) & (hour >= 18) & (hour <= 22))
        page_offer = view.is_("page_type", "product", "pricing") * 0.3
        support = view.is_("page_type", "support")
        no_consent = np.zeros(n)
        for chan, feature in CONSENT.items():
            no_consent += (channel == chan) * (1.0 - view.flag(feature))
        chan_effect = np.array([CHANNEL_EFFECT.get(c, 0.0) for c in channel])
        for j, a in enumerate(idx):
            kind, group, term = self.types[a], self.groups[a], self.terms[a]
            logit = TYPE_BASE.get(kind, -3.0) + chan_effect + responsiveness + 0.15 * evening
            if term is not None:
                logit = logit + term(view)
            if group in GROUPS:
                logit = logit + 0.4 * traits[:, 1 + GROUPS.index(group)]
            type_chan = np.array([TYPE_CHANNEL.get((kind, c), CHAT_ELSEWHERE
                                                   if kind == "chat_invite" else 0.0)
                                  for c in channel])
            logit = logit + type_chan
            if kind == "offer":
                # Selling to someone with an open complaint or in arrears backfires.
                logit = (logit - 1.6 * complaint - 0.03 * arrears + page_offer - 0.5 * support
                         - 0.8 * no_consent)
            elif kind == "service":
                logit = logit + 0.5 * support
            out[:, j] = logit
        return out

    def propensity(self, view: View, idx: np.ndarray) -> np.ndarray:
        return sigmoid(self.logits(view, idx))

    def propensity_rows(self, view: View, action_idx: np.ndarray) -> np.ndarray:
        """Probability of each row's own action (one action per row)."""
        p = self.propensity(view, np.arange(self.n_actions))
        return p[np.arange(view.n), action_idx]

    def values(self, view: View, idx: np.ndarray) -> np.ndarray:
        out = np.empty((view.n, len(idx)))
        for j, a in enumerate(idx):
            out[:, j] = self.value_fns[a](view)
        return out


def value_function(action: Any) -> Callable[[View], np.ndarray]:
    """The action's business value per row: its constant, or its `value_expr` evaluated on the
    (default-imputed) customer values with the same arithmetic the catalog allows."""
    expr = getattr(action, "value_expr", None)
    if not expr:
        const = float(getattr(action, "value", 0.0) or 0.0)
        return lambda v: np.full(v.n, const)
    try:
        tree = ast.parse(str(expr), mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"action {action.id!r}: value {expr!r}: {exc.msg}") from None

    def ev(node: ast.expr, v: View) -> np.ndarray:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return np.full(v.n, float(node.value))
        if isinstance(node, ast.Name):
            return v.num(node.id)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            inner = ev(node.operand, v)
            return -inner if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            return _ARITH[type(node.op)](ev(node.left, v), ev(node.right, v))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in _FUNCS and node.args and not node.keywords:
            return _FUNCS[node.func.id]([ev(a, v) for a in node.args])
        raise ValueError(f"action {action.id!r}: value {expr!r}: unsupported "
                         f"{type(node).__name__} at column {getattr(node, 'col_offset', 0)}")

    def fn(v: View) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.nan_to_num(ev(tree, v), nan=0.0, posinf=0.0, neginf=0.0)

    return fn


_ARITH: dict[type[ast.operator], Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide,
}
_FUNCS: dict[str, Callable[[list[np.ndarray]], np.ndarray]] = {
    "min": lambda xs: np.minimum.reduce(xs),
    "max": lambda xs: np.maximum.reduce(xs),
    "abs": lambda xs: np.abs(xs[0]),
}
