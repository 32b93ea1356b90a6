"""Synthetic bank customers with a hidden, known response model.

The simulator is the ground truth the rest of the project is measured against: it generates
correlated customer profiles and web/app sessions, and it knows each customer's true probability
of accepting each action on each channel. Training learns that function from sampled outcomes;
off-policy evaluation estimates `policy_value`, which the simulator computes exactly.

The response model (see docs/training.md) is a logistic model with hand-written interactions
(young without a card -> student card, high balance without savings -> savings, churn risk ->
retention, open complaint -> resolve-complaint and sales offers do badly), channel effects,
hidden per-customer traits the features do not show, and fatigue on repeated impressions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from features.schema import DType, FeatureSchema, Source
from training import ground_truth as truth
from training.ground_truth import Table
from training.response_model import ResponseModel, View, value_function

__all__ = [
    "FATIGUE",
    "Policy",
    "Simulator",
    "Table",
    "oracle_policy",
    "random_policy",
]

FATIGUE = truth.FATIGUE
_BLOCK = 512  # customers generated per seeded block

# A policy sees the simulator, the visits and the channel and returns either the served action
# index per row ((n,) int, -1 = nothing served) or a probability per action ((n, A) float).
Policy = Callable[["Simulator", Table, str], np.ndarray]


class Simulator:
    """Customers, sessions and outcomes for one schema and catalog, all seeded."""

    def __init__(self, schema: FeatureSchema, catalog: Any, seed: int = 0) -> None:
        self.schema = schema
        self.catalog = catalog
        self.seed = int(seed)
        self.actions: tuple[Any, ...] = tuple(catalog.actions)
        self.action_ids: list[str] = [str(a.id) for a in self.actions]
        self.model = ResponseModel(
            self.actions, self.seed, [value_function(a) for a in self.actions]
        )
        self._rng = np.random.default_rng([self.seed, 3])
        channel = schema.get("channel")
        self.channels: tuple[str, ...] = (
            channel.vocabulary if channel is not None else tuple(truth.CHANNEL_EFFECT)
        )

    # ------------------------------------------------------------------ customers
    def population(self, n: int, start: int = 0) -> Table:
        """Customers `start` .. `start + n - 1` (ids `C0000000`...) as columns.

        People are generated in fixed blocks seeded by (seed, block), so customer `C0000042`
        is the same person whether 100 or 100,000 customers are asked for.
        """
        if n < 0 or start < 0:
            raise ValueError(f"population({n}, start={start}): both must be >= 0")
        first, last = start // _BLOCK, (start + n + _BLOCK - 1) // _BLOCK
        blocks = [self._block(b) for b in range(first, max(last, first + 1))]
        cols = {k: np.concatenate([blk[k] for blk in blocks]) for k in blocks[0]}
        offset = start - first * _BLOCK
        cols = {k: v[offset : offset + n] for k, v in cols.items()}
        return self._conform(cols, Source.BATCH, n)

    def _block(self, b: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, 1, b])
        cols = truth.generate_customers(_BLOCK, rng)
        base = b * _BLOCK
        cols["customer_id"] = np.array([f"C{base + i:07d}" for i in range(_BLOCK)], dtype=object)
        # Real profiles have holes: the model must cope with missing income, score and region.
        for name, rate in (("income", 0.02), ("credit_score", 0.03), ("region", 0.01)):
            if name in cols:
                holes = rng.random(_BLOCK) < rate
                col = cols[name]
                hole = np.array(None, dtype=object) if col.dtype == object else np.nan
                cols[name] = np.where(holes, hole, col)
        return cols

    def customers(self, n: int, start: int = 0) -> list[dict[str, object]]:
        """`n` customer records: `customer_id` plus every BATCH feature (None = missing)."""
        return self.population(n, start).to_dicts(self.schema)

    def visits(
        self, customers: Table | Sequence[Mapping[str, object]], channel: str | np.ndarray,
        seed: int | None = None,
    ) -> Table:
        """Customers plus one session each on `channel`: REALTIME and CONTEXT columns added."""
        table = self._table(customers)
        n = len(table)
        chan = _channel_array(channel, n)
        unknown = set(np.unique(chan)) - set(self.channels)
        if unknown:
            raise ValueError(f"unknown channel(s) {sorted(unknown)}; known: {list(self.channels)}")
        rng = np.random.default_rng([self.seed, 2, 0 if seed is None else seed])
        cols = truth.generate_sessions(table, chan, rng)
        cols["channel"] = chan
        session = self._conform(cols, Source.REALTIME, n, keep=("channel", "hour_of_day",
                                                                "page_type"))
        return table.with_columns(session.columns)

    # -------------------------------------------------------------- ground truth
    def true_propensity_matrix(
        self,
        customers: Table | Sequence[Mapping[str, object]],
        actions: Sequence[int] | np.ndarray | None = None,
        channel: str | np.ndarray | None = None,
        context: Mapping[str, object] | None = None,
        recent_impressions: np.ndarray | int | None = None,
    ) -> np.ndarray:
        """(n_rows, n_actions) true acceptance probabilities.

        `channel` (one name or one per row) and `context` override the table's columns;
        `recent_impressions` (scalar, (n,) or (n, A)) counts earlier impressions of the same
        action, each multiplying the probability by `FATIGUE`.
        """
        table = self._table(customers)
        idx = np.arange(len(self.actions)) if actions is None else np.asarray(actions, np.intp)
        view = View(table, self.schema, channel, context)
        p = self.model.propensity(view, idx)
        if recent_impressions is not None:
            k = np.asarray(recent_impressions, dtype=np.float64)
            if k.ndim == 1:
                k = k[:, None]
            p = p * FATIGUE ** np.maximum(k, 0.0)
        return p

    def true_propensity(
        self,
        customer: Mapping[str, object],
        action_index: int,
        channel: str,
        context: Mapping[str, object] | None = None,
        recent_impressions: int = 0,
    ) -> float:
        """One customer's true probability of accepting one action on one channel."""
        p = self.true_propensity_matrix([customer], [action_index], channel, context,
                                        recent_impressions)
        return float(p[0, 0])

    def respond(
        self,
        customers: Table | Sequence[Mapping[str, object]],
        action_idx: np.ndarray | Sequence[int],
        channel: str | np.ndarray | None = None,
        context: Mapping[str, object] | None = None,
        recent_impressions: np.ndarray | int | None = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Draw one outcome (int8 0/1) per row for the action shown on that row."""
        table = self._table(customers)
        a = np.asarray(action_idx, dtype=np.intp)
        if a.shape != (len(table),):
            raise ValueError(f"action_idx has shape {a.shape}, expected ({len(table)},)")
        view = View(table, self.schema, channel, context)
        p = self.model.propensity_rows(view, a)
        if recent_impressions is not None:
            p = p * FATIGUE ** np.maximum(np.asarray(recent_impressions, np.float64), 0.0)
        draw = (rng if rng is not None else self._rng).random(len(table))
        return (draw < p).astype(np.int8)

    def value_matrix(
        self,
        customers: Table | Sequence[Mapping[str, object]],
        actions: Sequence[int] | np.ndarray | None = None,
    ) -> np.ndarray:
        """(n_rows, n_actions) business value of each action for each customer."""
        table = self._table(customers)
        idx = np.arange(len(self.actions)) if actions is None else np.asarray(actions, np.intp)
        view = View(table, self.schema, None, None)
        return self.model.values(view, idx)

    def value(self, customer: Mapping[str, object], action_index: int) -> float:
        """Business value of one action for one customer (the catalog's value expression)."""
        return float(self.value_matrix([customer], [action_index])[0, 0])

    def available(self, channel: str) -> np.ndarray:
        """Boolean mask over catalog actions offered on `channel`."""
        return np.array([channel in tuple(a.channels) for a in self.actions], dtype=bool)

    def policy_value(
        self,
        policy_fn: Policy,
        customers: Table | Sequence[Mapping[str, object]],
        channel: str,
    ) -> float:
        """Exact expected value per decision of a policy: mean of sum_a pi(a|x) p(x,a) v(x,a).

        Pass a table from `visits` to include sessions; a plain customer table scores the
        decision with default (empty) session features.
        """
        table = self._table(customers)
        out = np.asarray(policy_fn(self, table, channel))
        ev = self.true_propensity_matrix(table, channel=channel) * self.value_matrix(table)
        n, n_actions = ev.shape
        if out.ndim == 1:
            if out.shape[0] != n:
                raise ValueError(f"policy returned {out.shape[0]} actions for {n} rows")
            served = out.astype(np.intp)
            if np.any(served >= n_actions) or np.any(served < -1):
                raise ValueError("policy returned an action index outside the catalog")
            gain = np.where(served >= 0, ev[np.arange(n), np.maximum(served, 0)], 0.0)
            return float(gain.mean()) if n else 0.0
        if out.shape != ev.shape:
            raise ValueError(f"policy returned probabilities {out.shape}, expected {ev.shape}")
        if np.any(out < 0) or np.any(out.sum(axis=1) > 1.0 + 1e-9):
            raise ValueError("policy probabilities must be >= 0 and sum to <= 1 per row")
        return float((out * ev).sum(axis=1).mean()) if n else 0.0

    # ------------------------------------------------------------------ helpers
    def _table(self, customers: Table | Sequence[Mapping[str, object]]) -> Table:
        return customers if isinstance(customers, Table) else Table.from_dicts(customers)

    def _conform(
        self, cols: dict[str, np.ndarray], source: Source, n: int, keep: Sequence[str] = ()
    ) -> Table:
        """Keep the schema's features of `source` in schema order; unknown ones get defaults."""
        out: dict[str, np.ndarray] = {}
        if "customer_id" in cols:
            out["customer_id"] = cols["customer_id"]
        for spec in self.schema.of(source):
            if spec.name in cols:
                col = cols[spec.name]
                if spec.dtype is DType.CATEGORICAL:
                    vocab = set(spec.vocabulary)
                    col = np.array([v if v in vocab else None for v in col], dtype=object)
                out[spec.name] = col
            elif spec.dtype is DType.CATEGORICAL:
                out[spec.name] = np.full(n, spec.default, dtype=object)
            else:
                default = np.nan if spec.default is None else float(spec.default)
                out[spec.name] = np.full(n, default, dtype=np.float64)
        for name in keep:
            if name in cols and name not in out:
                out[name] = cols[name]
        return Table(out)


def _channel_array(channel: str | np.ndarray, n: int) -> np.ndarray:
    if isinstance(channel, str):
        return np.full(n, channel, dtype=object)
    chan = np.asarray(channel, dtype=object)
    if chan.shape != (n,):
        raise ValueError(f"channel has shape {chan.shape}, expected ({n},)")
    return chan


def oracle_policy(sim: Simulator, table: Table, channel: str) -> np.ndarray:
    """Serve the available action with the highest true expected value (the best possible)."""
    ev = sim.true_propensity_matrix(table, channel=channel) * sim.value_matrix(table)
    ev[:, ~sim.available(channel)] = -np.inf
    best = ev.argmax(axis=1)
    return np.where(np.isfinite(ev.max(axis=1)), best, -1) if len(table) else best


def random_policy(sim: Simulator, table: Table, channel: str) -> np.ndarray:
    """Uniform over the actions available on the channel: (n, A) probabilities."""
    mask = sim.available(channel).astype(np.float64)
    total = mask.sum()
    probs = mask / total if total else mask
    return np.tile(probs, (len(table), 1))
