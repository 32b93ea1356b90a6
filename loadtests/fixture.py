"""What the benchmark serves: a catalog with exactly N candidates on one channel, a 200-tree
model and a seeded customer base. Everything is built by the production code paths (catalog
parser, simulator, training pipeline, artifact export, bulk loader).

The N-candidate catalogs are the demo catalog with its actions repeated under new ids
(`card_gold__3`): a new id encodes as a missing `action_id` for the model, which changes the
scores but not the work, and the work is what the benchmark measures.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BENCH_CHANNEL = "WEB"
MODEL_TREES = 200
FIXTURE_VERSION = 1


@dataclass(frozen=True)
class Fixture:
    workdir: Path
    schema_path: Path
    model: Path
    customers_file: Path
    customer_ids: tuple[str, ...]
    catalogs: dict[int, Path]  # N -> catalog YAML with N candidates on BENCH_CHANNEL

    def catalog(self, n: int) -> Path:
        return self.catalogs[n]


def _strings(node: object) -> set[str]:
    if isinstance(node, str):
        return {node}
    if isinstance(node, dict):
        return set().union(*(_strings(v) for v in node.values())) if node else set()
    if isinstance(node, list | tuple):
        return set().union(*(_strings(v) for v in node)) if node else set()
    return set()


def catalog_doc(n: int, channel: str = BENCH_CHANNEL, base: Path | None = None) -> dict[str, Any]:
    """The demo catalog reshaped so that exactly `n` actions are offered on `channel`.

    Actions named elsewhere in the catalog (channel fallbacks, chat queues) and actions of
    other channels are kept;
    the other `channel` actions are taken in file order and then repeated with new ids.
    """
    doc = yaml.safe_load((base or EXAMPLES / "catalog.yaml").read_text(encoding="utf-8"))
    actions: list[dict[str, Any]] = doc["actions"]
    # Actions named outside the action list (channel fallbacks, chat queues, ...) must stay.
    referenced = _strings({k: v for k, v in doc.items() if k != "actions"})
    on_channel = [a for a in actions if channel in a["channels"]]
    required = [a for a in on_channel if a["id"] in referenced]
    if n < len(required):
        raise ValueError(f"n={n} is below the {len(required)} fallback actions of {channel}")
    others = [a for a in on_channel if a["id"] not in referenced]
    if not others and n > len(required):
        raise ValueError(f"{channel} has no non-fallback action to repeat")
    kept = {a["id"] for a in required} | {a["id"] for a in others[: n - len(required)]}
    clones: list[dict[str, Any]] = []
    copy_no = 1
    while len(kept) + len(clones) < n:
        for a in others[: n - len(kept) - len(clones)]:
            clone = copy.deepcopy(a)
            clone["id"] = f"{a['id']}__{copy_no}"
            clone["fallback"] = False
            clones.append(clone)
        copy_no += 1
    doc["actions"] = [a for a in actions if channel not in a["channels"] or a["id"] in kept]
    doc["actions"] += clones
    doc["name"] = f"bench-{channel.lower()}-{n}"
    return doc


def _fingerprint(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.read_bytes() if isinstance(p, Path) else repr(p).encode())
    return h.hexdigest()[:16]


def build_fixture(
    workdir: Path,
    sizes: tuple[int, ...],
    *,
    customers: int = 10_000,
    seed: int = 7,
    log: Any = print,
) -> Fixture:
    """Create (or reuse, when the inputs are unchanged) the benchmark's data in `workdir`."""
    from features.schema import FeatureSchema
    from nba_service.demo import write_customers
    from nba_service.engine.catalog import load_catalog, parse_catalog
    from training.config import TrainConfig
    from training.simulate import Simulator
    from training.train import run_training

    workdir.mkdir(parents=True, exist_ok=True)
    schema_path = EXAMPLES / "features.yaml"
    base_catalog = EXAMPLES / "catalog.yaml"
    schema = FeatureSchema.from_yaml(schema_path)
    catalog = load_catalog(base_catalog, schema)
    stamp = workdir / "fixture.json"
    fp = _fingerprint(schema_path, base_catalog, customers, seed, MODEL_TREES, FIXTURE_VERSION)
    fresh = stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == fp

    catalogs: dict[int, Path] = {}
    for n in sizes:
        path = workdir / f"catalog_{n}.yaml"
        doc = catalog_doc(n)
        parsed = parse_catalog(doc, schema)  # validates: the server would refuse a bad one
        got = sum(BENCH_CHANNEL in a.channels for a in parsed.actions)
        if got != n:
            raise AssertionError(f"catalog for n={n} has {got} {BENCH_CHANNEL} actions")
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        catalogs[n] = path

    model_dir = workdir / "model"
    data = workdir / "customers.parquet"
    if not fresh:
        log(f"simulating {customers} customers")
        rows = Simulator(schema, catalog, seed=seed).customers(customers)
        write_customers(data, rows, schema)
        log(f"training a {MODEL_TREES}-tree model (no early stopping)")
        cfg = TrainConfig.model_validate({
            "name": "bench-propensity", "schema": str(schema_path),
            "catalog": str(base_catalog), "seed": seed,
            "simulation": {"customers": 3000, "impressions_per_customer": 6},
            "training": {"num_boost_round": MODEL_TREES, "early_stopping_rounds": 0,
                         "log_every": 0, "params": {"num_leaves": 31}},
        })
        result, model_dir = run_training(cfg, schema, catalog, model_dir, overwrite=True)
        trees = result.booster.num_trees()
        if trees != MODEL_TREES:
            raise AssertionError(f"benchmark model has {trees} trees, expected {MODEL_TREES}")
        stamp.write_text(json.dumps({"fingerprint": fp, "model": str(model_dir)}))
    else:
        model_dir = Path(json.loads(stamp.read_text())["model"])
    import pyarrow.parquet as pq

    ids = tuple(str(x) for x in pq.read_table(data, columns=["customer_id"]).column(0).to_pylist())
    return Fixture(workdir, schema_path, model_dir, data, ids, catalogs)


def seed_store(fixture: Fixture, redis_url: str) -> int:
    """Load the customer base into the store at `redis_url`; returns rows loaded."""
    import redis

    from features.schema import FeatureSchema
    from nba_service.store.loader import load_file

    schema = FeatureSchema.from_yaml(fixture.schema_path)
    report = load_file(fixture.customers_file, redis.Redis.from_url(redis_url), schema,
                       progress=False)
    if report.rejected:
        raise AssertionError(f"{report.rejected} customers rejected while seeding the store")
    return int(report.loaded)
