"""The simulator's hidden world: how customers are generated and how they really respond.

Nothing here is visible to a model: training sees only sampled outcomes. Hidden per-customer
traits (general responsiveness, a taste per action group) are derived from a keyed hash of the
customer id, so they are a fixed property of the customer, not of the order rows are drawn in.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from features.schema import DType, FeatureSchema

FATIGUE = 0.7  # each earlier impression of the same action multiplies acceptance by this

CHANNEL_EFFECT = {
    "WEB": 0.0, "MOBILE_APP": 0.1, "CALL_CENTRE": 0.7, "CHAT": 0.4,
    "EMAIL": -0.9, "BRANCH": 0.6, "SMS": -1.1, "ATM": -0.8,
}
TYPE_BASE = {"offer": -2.6, "service": -2.2, "retention": -2.4, "chat_invite": -2.2, "info": -3.0}
# People take service and retention conversations on assisted channels; a chat invitation only
# means something inside a web or app session.
TYPE_CHANNEL = {
    ("retention", "CALL_CENTRE"): 0.8, ("retention", "BRANCH"): 0.5, ("retention", "CHAT"): 0.4,
    ("service", "CALL_CENTRE"): 0.5, ("service", "CHAT"): 0.6, ("offer", "BRANCH"): 0.4,
    ("info", "EMAIL"): 0.6, ("chat_invite", "WEB"): 0.3, ("chat_invite", "MOBILE_APP"): 0.0,
}
CHAT_ELSEWHERE = -2.0
GROUPS = ("cards", "loans", "mortgages", "savings", "insurance", "mobile", "retention",
          "service", "info", "chat")
CONSENT = {"EMAIL": "consent_email", "SMS": "consent_sms", "WEB": "consent_digital",
           "MOBILE_APP": "consent_digital"}
N_TRAITS = 1 + len(GROUPS)


class Table:
    """Equal-length columns by name: float64 for numbers and flags (NaN = missing), object
    arrays of str for categories and ids (None = missing)."""

    def __init__(self, columns: Mapping[str, np.ndarray]) -> None:
        lengths = {name: len(col) for name, col in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"columns have different lengths: {lengths}")
        self.columns: dict[str, np.ndarray] = dict(columns)
        self._n = next(iter(lengths.values()), 0)

    def __len__(self) -> int:
        return self._n

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def take(self, idx: np.ndarray | Sequence[int]) -> Table:
        rows = np.asarray(idx, dtype=np.intp)
        return Table({k: v[rows] for k, v in self.columns.items()})

    def with_columns(self, columns: Mapping[str, np.ndarray]) -> Table:
        return Table({**self.columns, **columns})

    def to_dicts(self, schema: FeatureSchema | None = None) -> list[dict[str, object]]:
        """Plain Python records (int/float/bool/str, None for missing) typed by the schema."""
        converters = [(name, _converter(schema, name)) for name in self.columns]
        lists = [(name, conv, self.columns[name].tolist()) for name, conv in converters]
        return [{name: conv(vals[i]) for name, conv, vals in lists} for i in range(self._n)]

    @classmethod
    def from_dicts(cls, records: Sequence[Mapping[str, object]]) -> Table:
        names: dict[str, None] = {}
        for rec in records:
            names.update(dict.fromkeys(rec))
        cols: dict[str, np.ndarray] = {}
        for name in names:
            vals = [rec.get(name) for rec in records]
            if any(isinstance(v, str) for v in vals):
                cols[name] = np.array(vals, dtype=object)
            else:
                cols[name] = np.array([np.nan if v is None else float(v) for v in vals])  # type: ignore[arg-type]
        return cls(cols)


def _converter(schema: FeatureSchema | None, name: str) -> Callable[[object], object]:
    spec = schema.get(name) if schema is not None else None

    def missing(v: object) -> bool:
        return v is None or (isinstance(v, float) and v != v)

    if spec is None or spec.dtype is DType.CATEGORICAL:
        return lambda v: None if missing(v) else v
    if spec.dtype is DType.BOOL:
        return lambda v: None if missing(v) else bool(v)
    if spec.dtype is DType.INT:
        return lambda v: None if missing(v) else int(v)  # type: ignore[call-overload]
    return lambda v: None if missing(v) else float(v)  # type: ignore[arg-type]


def stable_uniforms(ids: Sequence[object], seed: int, k: int) -> np.ndarray:
    """(n, k) uniforms in (0, 1) that depend only on (seed, id)."""
    out = np.empty((len(ids), k), dtype=np.float64)
    key = (seed % 2**63).to_bytes(8, "little")
    blocks = (k * 4 + 63) // 64
    for i, cid in enumerate(ids):
        raw = b"".join(
            hashlib.blake2b(f"{cid}:{j}".encode(), digest_size=64, key=key).digest()
            for j in range(blocks)
        )
        out[i] = (np.frombuffer(raw, dtype="<u4")[:k].astype(np.float64) + 0.5) / 2.0**32
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def bump(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-(((x - centre) / width) ** 2))


# ---------------------------------------------------------------------- generation
def generate_customers(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Correlated BATCH features: income follows age and region, products follow income and
    age, churn follows complaints, arrears and tenure, CLV follows income and products."""
    age = np.clip(rng.normal(42, 15, n), 18, 90).round()
    region = rng.choice(["north", "south", "east", "west", "capital"], n,
                        p=[0.2, 0.2, 0.18, 0.17, 0.25])
    capital = region == "capital"
    student = (age < 26) & (rng.random(n) < 0.55)
    log_inc = (10.1 + 0.6 * bump(age, 50, 18) + 0.25 * capital - 0.9 * student
               + rng.normal(0, 0.45, n))
    income = np.exp(log_inc).round(-2)
    z_inc = (log_inc - 10.4) / 0.5
    tenure = np.minimum((age - 18) * 12, rng.exponential(70, n)).round()
    overdue = np.where(rng.random(n) < sigmoid(-2.6 - 0.6 * z_inc), rng.geometric(1 / 20, n), 0)
    credit = np.clip(650 + 45 * z_inc + 1.2 * (age - 40) - 90 * (overdue > 0)
                     + rng.normal(0, 45, n), 300, 850).round()
    z_cs = (credit - 650) / 80

    def owns(logit: np.ndarray) -> np.ndarray:
        return (rng.random(n) < sigmoid(logit)).astype(np.float64)

    has_cc = owns(-0.4 + 0.7 * z_cs + 0.3 * z_inc - 1.2 * student)
    has_mortgage = owns(-1.2 + 1.5 * bump(age, 45, 14) + 0.6 * z_inc - 3 * student)
    has_loan = owns(-1.5 + 0.3 * bump(age, 35, 12) - 0.2 * z_inc)
    has_savings = owns(-0.3 + 0.6 * z_inc + 0.02 * (age - 40))
    has_insurance = owns(-1.0 + 1.2 * has_mortgage + 0.3 * z_inc)
    has_mobile = owns(-0.6 - 0.02 * (age - 40))
    balance = np.exp(np.log(income) - 2.6 + rng.normal(0, 0.9, n))
    balance = np.where(rng.random(n) < 0.06, -rng.exponential(400, n), balance).round(2)
    savings = np.where(has_savings > 0, np.exp(np.log(income) - 1.0 + rng.normal(0, 1.0, n)), 0.0)
    complaints = rng.poisson(0.07 + 0.25 * (overdue > 0), n).astype(np.float64)
    products = 1 + has_cc + has_mortgage + has_loan + has_savings + has_insurance + has_mobile
    churn = sigmoid(-2.2 + 0.9 * np.minimum(complaints, 3) + 0.6 * (overdue > 0)
                     - 0.008 * tenure - 0.25 * (products - 2) + rng.normal(0, 0.5, n))
    clv = (income * 0.015 * (0.6 + 0.4 * products) * (1 - churn)
           * (0.5 + np.minimum(tenure, 240) / 240) + rng.gamma(2.0, 40, n)).round(2)
    segment = np.select(
        [student, rng.random(n) < 0.06, income >= 150_000, income >= 90_000, income >= 55_000],
        ["student", "small_business", "vip", "gold", "affluent"], "mass",
    ).astype(object)
    digital = owns(1.6 - 0.06 * (age - 40))
    return {
        "age": age, "tenure_months": tenure, "income": income, "balance": balance,
        "savings_balance": savings.round(2), "credit_score": credit, "clv": clv,
        "churn_risk": churn.round(4), "segment": segment, "region": region.astype(object),
        "num_products": products, "has_credit_card": has_cc, "has_mortgage": has_mortgage,
        "has_personal_loan": has_loan, "has_savings": has_savings,
        "has_insurance": has_insurance, "has_mobile_plan": has_mobile,
        "open_complaints": complaints,
        "days_since_last_contact": np.minimum(rng.exponential(60, n), 720).round(),
        "payment_overdue_days": overdue.astype(np.float64), "digital_active": digital,
        "consent_email": owns(0.4 + 0.3 * digital), "consent_sms": owns(-0.4 + 0.0 * age),
        "consent_phone": owns(0.0 + 0.01 * (age - 40)), "consent_digital": owns(2.0 * digital),
    }


def generate_sessions(table: Table, channel: np.ndarray, rng: np.random.Generator) -> dict[
    str, np.ndarray
]:
    """REALTIME features and request CONTEXT for one visit per row on the row's channel."""
    n = len(table)
    digital = np.isin(channel, ("WEB", "MOBILE_APP"))
    complaints = np.nan_to_num(numeric(table, "open_complaints"), nan=0.0)
    pages = np.array(["home", "product", "pricing", "checkout", "support", "account", "other"],
                     dtype=object)
    weights = np.array([0.28, 0.2, 0.1, 0.06, 0.1, 0.2, 0.06])
    page_type = pages[rng.choice(len(pages), n, p=weights)]
    page_type = np.where((complaints > 0) & (rng.random(n) < 0.4), "support", page_type)
    views = np.where(digital, 1 + rng.poisson(3.0, n), 0).astype(np.float64)
    basket = np.isin(page_type, ("product", "pricing", "checkout")) & (rng.random(n) < 0.5)
    hour = np.where(
        digital,
        np.where(rng.random(n) < 0.5, rng.normal(13, 3, n), rng.normal(20, 2, n)),
        rng.normal(13, 3, n),
    )
    return {
        "session_page_views": views,
        "session_dwell_s": np.where(digital, views * rng.lognormal(3.4, 0.7, n), 0.0).round(1),
        "cart_value": np.where(digital & basket, rng.lognormal(4.0, 1.0, n), 0.0).round(2),
        "errors_seen": np.where(
            digital, rng.poisson(0.15 + 0.6 * (page_type == "support"), n), 0
        ).astype(np.float64),
        "failed_logins": rng.poisson(0.06, n).astype(np.float64),
        "hours_since_complaint": np.where(
            complaints > 0, rng.exponential(96, n).round(1), 9999.0
        ),
        "hour_of_day": np.clip(hour, 0, 23).round() % 24,
        "page_type": np.where(digital, page_type, np.array(None, dtype=object)),
    }


def numeric(table: Table, name: str) -> np.ndarray:
    """A column as float64; missing or non-numeric values (from hand-made dicts) are NaN."""
    if name not in table:
        return np.full(len(table), np.nan)
    col = table[name]
    if col.dtype != object:
        return col.astype(np.float64)
    out = np.full(len(col), np.nan)
    for i, v in enumerate(col):
        with contextlib.suppress(TypeError, ValueError):
            out[i] = float(v)
    return out
