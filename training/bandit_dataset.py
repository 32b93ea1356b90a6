"""Logged bandit feedback: any table of (context, chosen action, reward, propensity).

Public logged data (the Open Bandit Dataset, a company's own campaign logs) comes as one table
per file. `load_bandit_table` reads it from CSV or Parquet (a file, or a directory of Parquet
files) given which columns hold the action, the reward and the logging propensity; every other
column is a context feature unless excluded:

    action      (--action-col, default `action`): string or integer, the action the logging
                policy chose; no missing values
    reward      (--reward-col, default `reward`): number, the observed reward (0/1 click, or
                a value); no missing values
    propensity  (--propensity-col, default `propensity`): number in (0, 1], the logging
                policy's probability of the chosen action
    anything else: context features; numbers and bools as floats, strings as categorical
                codes; missing = NaN

Preset `obd` (Open Bandit Dataset): action `item_id`, reward `click`, propensity
`propensity_score`, ignoring `timestamp` and an unnamed index column.

`simulate_logged` draws logged feedback from the simulator and keeps the visits, so the true
value of any policy on exactly those contexts is known.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.encoding import RowEncoder, encode_batch_values
from training.dataset import Dataset, DatasetError, _channel_weights, _encode
from training.ground_truth import Table
from training.simulate import Simulator, oracle_policy

__all__ = ["PRESETS", "BanditTable", "load_bandit_table", "simulate_logged"]

PRESETS: dict[str, dict[str, object]] = {
    "default": {"action": "action", "reward": "reward", "propensity": "propensity",
                "exclude": ()},
    "obd": {"action": "item_id", "reward": "click", "propensity": "propensity_score",
            "exclude": ("timestamp", "", "Unnamed: 0", "index")},
}


@dataclass
class BanditTable:
    """Contexts as a float32 matrix (categoricals as codes), chosen action, reward, pscore."""

    x: np.ndarray  # float32 (n, F)
    feature_names: list[str]
    categorical: list[str]  # feature names holding category codes
    categories: dict[str, list[str]]  # code -> original string, per categorical feature
    action: np.ndarray  # intp (n,), index into action_ids
    action_ids: list[str]
    reward: np.ndarray  # float64 (n,)
    propensity: np.ndarray  # float64 (n,)
    source: str = ""

    def __len__(self) -> int:
        return int(self.reward.shape[0])

    def subset(self, rows: np.ndarray) -> BanditTable:
        return BanditTable(
            x=self.x[rows], feature_names=self.feature_names, categorical=self.categorical,
            categories=self.categories, action=self.action[rows], action_ids=self.action_ids,
            reward=self.reward[rows], propensity=self.propensity[rows], source=self.source,
        )

    @property
    def binary_reward(self) -> bool:
        return bool(np.isin(self.reward, (0.0, 1.0)).all())


def _read(path: Path) -> pa.Table:
    try:
        if path.is_dir():
            return pq.read_table(path)
        if path.suffix.lower() in (".csv", ".tsv") or path.name.lower().endswith(".csv.gz"):
            opts = pacsv.ParseOptions(delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            return pacsv.read_csv(path, parse_options=opts)
        return pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from None


def _numeric(path: Path, table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
            or pa.types.is_boolean(col.type)):
        raise DatasetError(f"{path}: column {name!r} must be numeric, not {col.type}")
    out = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    out = np.where(np.asarray(pc.is_null(col).to_numpy(zero_copy_only=False)), np.nan, out)
    return np.asarray(out, dtype=np.float64)


def load_bandit_table(
    path: str | Path,
    *,
    preset: str = "default",
    action_col: str | None = None,
    reward_col: str | None = None,
    propensity_col: str | None = None,
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> BanditTable:
    """Read a logged-bandit-feedback table; errors name the file, the column and a bad row."""
    if preset not in PRESETS:
        raise DatasetError(f"preset {preset!r}: use one of {sorted(PRESETS)}")
    spec = PRESETS[preset]
    a_col = action_col or str(spec["action"])
    r_col = reward_col or str(spec["reward"])
    p_col = propensity_col or str(spec["propensity"])
    p = Path(path)
    table = _read(p)
    missing = [c for c in (a_col, r_col, p_col) if c not in table.column_names]
    if missing:
        raise DatasetError(f"{p}: missing column(s) {missing}; columns are "
                           f"{table.column_names[:20]}")
    if table.num_rows == 0:
        raise DatasetError(f"{p}: no rows")
    skip = {a_col, r_col, p_col, *exclude, *tuple(spec["exclude"])}  # type: ignore[arg-type]
    names = list(features) if features is not None else [
        c for c in table.column_names if c not in skip]
    unknown = [c for c in names if c not in table.column_names]
    if unknown:
        raise DatasetError(f"{p}: feature column(s) {unknown} not in the file")
    if not names:
        raise DatasetError(f"{p}: no context feature columns left")
    reward = _numeric(p, table, r_col)
    pscore = _numeric(p, table, p_col)
    for name, arr, ok in ((r_col, reward, np.isfinite(reward)),
                          (p_col, pscore, np.isfinite(pscore) & (pscore > 0) & (pscore <= 1))):
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise DatasetError(f"{p}: column {name!r} row {i}: {arr[i]!r} is not valid "
                               f"({int((~ok).sum())} bad rows"
                               + (", propensities must be in (0, 1])" if name == p_col else ")"))
    acts = table.column(a_col)
    if acts.null_count:
        raise DatasetError(f"{p}: column {a_col!r} has {acts.null_count} missing actions")
    raw_actions = [str(v) for v in acts.to_pylist()]
    action_ids = sorted(set(raw_actions), key=_natural)
    index = {a: i for i, a in enumerate(action_ids)}
    x = np.empty((table.num_rows, len(names)), dtype=np.float32)
    categorical: list[str] = []
    categories: dict[str, list[str]] = {}
    for j, name in enumerate(names):
        col = table.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) \
                or pa.types.is_dictionary(col.type):
            vals = col.cast(pa.string()).to_pylist()
            vocab = sorted({v for v in vals if v is not None})
            codes = {v: k for k, v in enumerate(vocab)}
            x[:, j] = [np.nan if v is None else codes[v] for v in vals]
            categorical.append(name)
            categories[name] = vocab
        else:
            x[:, j] = _numeric(p, table, name)
    return BanditTable(
        x=x, feature_names=names, categorical=categorical, categories=categories,
        action=np.array([index[a] for a in raw_actions], dtype=np.intp),
        action_ids=action_ids, reward=reward, propensity=pscore, source=str(p),
    )


def _natural(s: str) -> tuple[int, int | str]:
    return (0, int(s)) if s.lstrip("-").isdigit() else (1, s)


def simulate_logged(
    sim: Simulator,
    n_customers: int,
    channels: Sequence[str] | Mapping[str, float],
    *,
    logging_policy: str = "random",
    epsilon: float = 0.1,
    seed: int = 0,
    start_customer: int = 0,
) -> tuple[Dataset, Table]:
    """One logged visit per customer (so no fatigue) and the visits themselves.

    Returns the dataset (rows encoded as the service encodes them, `propensity_logged` exact)
    and the visit table, from which `sim.true_propensity_matrix(visits, channel=...)` gives the
    truth for any policy on these very contexts.
    """
    if logging_policy not in ("random", "epsilon_greedy"):
        raise ValueError(f"logging_policy {logging_policy!r}: use random or epsilon_greedy")
    names, weights = _channel_weights(channels, sim)
    rng = np.random.default_rng([seed, 23])
    pop = sim.population(n_customers, start=start_customer)
    n = len(pop)
    chan = np.asarray(names, dtype=object)[rng.choice(len(names), n, p=weights)]
    visits = sim.visits(pop, chan, seed=seed * 7919 + 1)
    served = np.empty(n, dtype=np.intp)
    logged = np.empty(n, dtype=np.float64)
    for c in names:
        rows = np.flatnonzero(chan == c)
        if not rows.size:
            continue
        options = np.flatnonzero(sim.available(c))
        uniform = rng.choice(options, rows.size)
        if logging_policy == "random":
            served[rows], logged[rows] = uniform, 1.0 / options.size
            continue
        best = oracle_policy(sim, visits.take(rows), c)
        explore = rng.random(rows.size) < epsilon
        served[rows] = np.where(explore, uniform, best)
        logged[rows] = epsilon / options.size + (1 - epsilon) * (served[rows] == best)
    y = sim.respond(visits, served, rng=rng)
    encoder = RowEncoder(sim.schema, [a.attributes() for a in sim.actions])
    batch = [encode_batch_values(sim.schema, rec) for rec in pop.to_dicts(sim.schema)]
    x = _encode(encoder, sim.schema, batch, visits.to_dicts(sim.schema), served)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    data = Dataset(
        x=x, y=y, action_idx=served.astype(np.int32), channel=chan, propensity_logged=logged,
        customer_id=np.asarray(pop["customer_id"], dtype=object),
        feature_names=list(sim.schema.column_names), action_ids=list(sim.action_ids),
        schema_hash=sim.schema.hash, window=(t0.isoformat(), (t0 + timedelta(days=1)).isoformat()),
        logging_policy=logging_policy if logging_policy == "random"
        else f"epsilon_greedy({epsilon})",
        extra={"simulator_seed": sim.seed, "seed": seed},
    )
    return data, visits
