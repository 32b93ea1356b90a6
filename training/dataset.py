"""Impression datasets: simulated (or, later, exported) rows with logged outcomes.

Rows are encoded with `features.encoding` (the encoder the service runs on the hot path), so a
model trained here sees exactly the matrix it will be served.

Parquet layout: one float32 column per schema feature (schema names, schema order) plus
`label` (int8), `logged_action_id`, `logged_channel`, `logged_propensity` (the logging policy's
probability of the served action, for off-policy evaluation) and `customer_id`. The schema
feature names `action_id` and `channel` are model inputs, hence the `logged_` prefix on the
raw values. File metadata holds the schema hash, the catalog action ids, the data window and
the logging policy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from features.encoding import RowEncoder, encode_batch_values, encode_realtime_values
from features.schema import FeatureSchema
from training.simulate import Simulator, oracle_policy

__all__ = ["META_COLUMNS", "Dataset", "DatasetError", "simulate_impressions"]

META_COLUMNS = ("label", "logged_action_id", "logged_channel", "logged_propensity", "customer_id")
LOGGING_POLICIES = ("random", "epsilon_greedy")
_META_KEY = b"nba.dataset"


class DatasetError(ValueError):
    """A dataset file does not match the schema or is malformed; the message says how."""


@dataclass
class Dataset:
    x: np.ndarray  # float32 (N, F), schema column order
    y: np.ndarray  # int8 (N,)
    action_idx: np.ndarray  # int32 (N,), index into `action_ids`
    channel: np.ndarray  # object (N,) channel names
    propensity_logged: np.ndarray  # float64 (N,)
    customer_id: np.ndarray  # object (N,)
    feature_names: list[str]
    action_ids: list[str]
    schema_hash: str
    window: tuple[str, str]  # ISO-8601 start, end of the data
    logging_policy: str = "random"
    extra: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, rows: np.ndarray) -> Dataset:
        return Dataset(
            x=self.x[rows], y=self.y[rows], action_idx=self.action_idx[rows],
            channel=self.channel[rows], propensity_logged=self.propensity_logged[rows],
            customer_id=self.customer_id[rows], feature_names=self.feature_names,
            action_ids=self.action_ids, schema_hash=self.schema_hash, window=self.window,
            logging_policy=self.logging_policy, extra=dict(self.extra),
        )

    def save(self, path: str | Path) -> Path:
        """Write the dataset as one Parquet file (see the module docstring for the columns)."""
        clash = set(META_COLUMNS) & set(self.feature_names)
        if clash:
            raise DatasetError(f"feature name(s) {sorted(clash)} collide with dataset columns")
        cols: dict[str, pa.Array] = {
            name: pa.array(self.x[:, j]) for j, name in enumerate(self.feature_names)
        }
        ids = np.asarray(self.action_ids, dtype=object)
        cols["label"] = pa.array(self.y.astype(np.int8))
        cols["logged_action_id"] = pa.array(ids[self.action_idx].tolist(), pa.string())
        cols["logged_channel"] = pa.array(self.channel.tolist(), pa.string())
        cols["logged_propensity"] = pa.array(self.propensity_logged.astype(np.float64))
        cols["customer_id"] = pa.array([str(c) for c in self.customer_id], pa.string())
        meta = {
            "schema_hash": self.schema_hash, "action_ids": self.action_ids,
            "window": list(self.window), "logging_policy": self.logging_policy,
            "extra": self.extra,
        }
        table = pa.table(cols).replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out)
        return out

    @classmethod
    def load(cls, path: str | Path, schema: FeatureSchema) -> Dataset:
        """Read a dataset written by `save`, checking it was built for `schema`."""
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DatasetError(f"{path}: cannot read Parquet: {exc}") from None
        raw_meta = (table.schema.metadata or {}).get(_META_KEY)
        if raw_meta is None:
            raise DatasetError(f"{path}: no {_META_KEY.decode()} metadata (not a nba dataset)")
        meta = json.loads(raw_meta)
        if meta.get("schema_hash") != schema.hash:
            raise DatasetError(
                f"{path}: built for schema hash {meta.get('schema_hash')}, "
                f"this schema is {schema.hash}"
            )
        missing = [c for c in [*schema.column_names, *META_COLUMNS] if c not in table.column_names]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {missing}")
        x = np.empty((table.num_rows, len(schema.column_names)), dtype=np.float32)
        for j, name in enumerate(schema.column_names):
            x[:, j] = table.column(name).to_numpy(zero_copy_only=False)
        action_ids = [str(a) for a in meta["action_ids"]]
        index = {a: i for i, a in enumerate(action_ids)}
        logged = table.column("logged_action_id").to_pylist()
        unknown = sorted({a for a in logged if a not in index})
        if unknown:
            raise DatasetError(f"{path}: logged_action_id values {unknown[:5]} not in metadata")
        return cls(
            x=x,
            y=table.column("label").to_numpy().astype(np.int8),
            action_idx=np.array([index[a] for a in logged], dtype=np.int32),
            channel=np.array(table.column("logged_channel").to_pylist(), dtype=object),
            propensity_logged=table.column("logged_propensity").to_numpy().astype(np.float64),
            customer_id=np.array(table.column("customer_id").to_pylist(), dtype=object),
            feature_names=list(schema.column_names), action_ids=action_ids,
            schema_hash=schema.hash, window=(meta["window"][0], meta["window"][1]),
            logging_policy=str(meta.get("logging_policy", "unknown")),
            extra=dict(meta.get("extra") or {}),
        )


def simulate_impressions(
    sim: Simulator,
    n_customers: int,
    impressions_per_customer: int,
    channels: Sequence[str] | Mapping[str, float],
    logging_policy: str = "random",
    seed: int = 0,
    epsilon: float = 0.1,
    start: datetime | None = None,
    days: float = 28.0,
) -> Dataset:
    """Serve actions to simulated customers with a known logging policy and record outcomes.

    Each customer makes `impressions_per_customer` visits on channels drawn from `channels`
    (a list = uniform, a mapping = weights). The served action comes from the logging policy
    among the actions offered on the channel: `random` (uniform) or `epsilon_greedy` (the
    oracle's choice with probability 1 - epsilon, else uniform); its exact selection
    probability is logged. Repeated impressions of an action lower its acceptance (fatigue).
    """
    if logging_policy not in LOGGING_POLICIES:
        raise ValueError(f"logging_policy {logging_policy!r}: use one of {LOGGING_POLICIES}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon {epsilon} must be in [0, 1]")
    names, weights = _channel_weights(channels, sim)
    rng = np.random.default_rng([seed, 11])
    pop = sim.population(n_customers)
    n, n_actions = len(pop), len(sim.actions)
    avail = {c: sim.available(c) for c in names}
    encoder = RowEncoder(sim.schema, [a.attributes() for a in sim.actions])
    batch = [encode_batch_values(sim.schema, rec) for rec in pop.to_dicts(sim.schema)]
    seen = np.zeros((n, n_actions), dtype=np.int32)
    parts: list[tuple[np.ndarray, ...]] = []
    for r in range(impressions_per_customer):
        chan = np.asarray(names, dtype=object)[rng.choice(len(names), n, p=weights)]
        visits = sim.visits(pop, chan, seed=seed * 1_000_003 + r)
        served = np.empty(n, dtype=np.intp)
        logged = np.empty(n, dtype=np.float64)
        for c in names:
            rows = np.flatnonzero(chan == c)
            if not rows.size:
                continue
            options = np.flatnonzero(avail[c])
            uniform = rng.choice(options, rows.size)
            if logging_policy == "random":
                served[rows], logged[rows] = uniform, 1.0 / options.size
                continue
            best = oracle_policy(sim, visits.take(rows), c)
            explore = rng.random(rows.size) < epsilon
            served[rows] = np.where(explore, uniform, best)
            logged[rows] = epsilon / options.size + (1 - epsilon) * (served[rows] == best)
        recent = seen[np.arange(n), served]
        y = sim.respond(visits, served, recent_impressions=recent, rng=rng)
        seen[np.arange(n), served] += 1
        x = _encode(encoder, sim.schema, batch, visits.to_dicts(sim.schema), served)
        parts.append((x, y, served.astype(np.int32), chan, logged, pop["customer_id"]))
    t0 = start or datetime(2024, 1, 1, tzinfo=UTC)
    return Dataset(
        x=np.concatenate([p[0] for p in parts]) if parts else np.empty(
            (0, len(sim.schema.column_names)), np.float32),
        y=np.concatenate([p[1] for p in parts]) if parts else np.empty(0, np.int8),
        action_idx=np.concatenate([p[2] for p in parts]) if parts else np.empty(0, np.int32),
        channel=np.concatenate([p[3] for p in parts]) if parts else np.empty(0, object),
        propensity_logged=np.concatenate([p[4] for p in parts]) if parts else np.empty(0),
        customer_id=np.concatenate([p[5] for p in parts]) if parts else np.empty(0, object),
        feature_names=list(sim.schema.column_names), action_ids=list(sim.action_ids),
        schema_hash=sim.schema.hash,
        window=(t0.isoformat(), (t0 + timedelta(days=days)).isoformat()),
        logging_policy=logging_policy if logging_policy == "random"
        else f"epsilon_greedy({epsilon})",
        extra={"simulator_seed": sim.seed, "seed": seed, "catalog_version": str(
            getattr(sim.catalog, "version", ""))},
    )


def _encode(
    encoder: RowEncoder, schema: FeatureSchema, batch: Sequence[np.ndarray],
    visits: Sequence[Mapping[str, object]], served: np.ndarray,
) -> np.ndarray:
    # The batch part is encoded once per customer, as the store would hold it packed; the
    # session and the context are encoded per visit, as a request would bring them.
    out = np.empty((len(visits), encoder.n_columns), dtype=np.float32)
    candidate = np.empty(1, dtype=np.intp)
    for i, rec in enumerate(visits):
        row = encoder.customer_row(batch[i], encode_realtime_values(schema, rec), rec)
        candidate[0] = served[i]
        encoder.encode(row, candidate, out=out[i : i + 1])
    return out


def _channel_weights(
    channels: Sequence[str] | Mapping[str, float], sim: Simulator
) -> tuple[list[str], np.ndarray]:
    if isinstance(channels, Mapping):
        names, w = list(channels), np.array([float(v) for v in channels.values()])
    else:
        names, w = list(channels), np.ones(len(channels))
    if not names or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("channels: need at least one channel with a positive weight")
    for c in names:
        if c not in sim.channels:
            raise ValueError(f"channel {c!r} is not in the schema's channel vocabulary")
        if not sim.available(c).any():
            raise ValueError(f"channel {c!r}: no catalog action is offered there")
    return names, w / w.sum()
