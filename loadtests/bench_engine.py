"""Micro-benchmark of the decision kernel: rules + arbitration + top-k for N candidates.

    .venv/bin/python loadtests/bench_engine.py [--candidates 100] [--iterations 20000]

Reports p50/p95/p99 (never averages) of (a) the Numba kernel call alone, (b) the whole
`Engine.rank` call including its input conversion, after warm-up, and (c) the exploration step
(`explore.select`) per method, against greedy selection measured in the same run. The catalog
is the demo catalog with its actions repeated (new ids) until the WEB channel has N candidates.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from pathlib import Path

import numba
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.schema import FeatureSchema  # noqa: E402
from nba_service.engine import kernel  # noqa: E402
from nba_service.engine.arbitration import Engine  # noqa: E402
from nba_service.engine.catalog import Catalog, parse_catalog  # noqa: E402


def build_catalog(schema: FeatureSchema, n_web: int) -> Catalog:
    doc = yaml.safe_load((ROOT / "examples" / "catalog.yaml").read_text(encoding="utf-8"))
    base = doc["actions"]
    web = sum("WEB" in a["channels"] for a in base)
    copies = -(-n_web // web)
    actions = list(base)
    for c in range(1, copies):
        for a in base:
            clone = copy.deepcopy(a)
            clone["id"] = f"{a['id']}__{c}"
            clone["fallback"] = False
            actions.append(clone)
    doc["actions"] = actions
    return parse_catalog(doc, schema)


def customers(schema: FeatureSchema, n: int, rng: np.random.Generator) -> np.ndarray:
    """Plausible encoded customers, some values missing, so every rule branch is exercised."""
    rows = np.full((n, len(schema.features)), np.nan, dtype=np.float32)
    ranges = {
        "age": (18, 80), "tenure_months": (0, 240), "income": (8_000, 200_000),
        "balance": (0, 30_000), "savings_balance": (0, 80_000), "credit_score": (450, 850),
        "clv": (50, 5_000), "churn_risk": (0, 1), "num_products": (1, 6),
        "open_complaints": (0, 2), "payment_overdue_days": (0, 45),
        "session_page_views": (0, 12), "session_dwell_s": (0, 600), "cart_value": (0, 400),
        "errors_seen": (0, 4), "failed_logins": (0, 4), "hour_of_day": (0, 23),
        "days_since_last_contact": (0, 200), "hours_since_complaint": (0, 999),
    }
    for j, spec in enumerate(schema.features):
        if spec.source.value == "action":
            continue
        if spec.vocabulary:
            rows[:, j] = rng.integers(0, len(spec.vocabulary), n)
        elif spec.dtype.value == "bool":
            rows[:, j] = rng.integers(0, 2, n)
        elif spec.name in ranges:
            lo, hi = ranges[spec.name]
            vals = rng.uniform(lo, hi, n)
            rows[:, j] = np.floor(vals) if spec.dtype.value == "int" else vals
    rows[rng.random(rows.shape) < 0.03] = np.nan  # a few stale / missing values
    return rows


def pct(samples_ns: np.ndarray) -> str:
    p50, p95, p99 = np.percentile(samples_ns / 1000.0, [50, 95, 99])
    return f"p50 {p50:7.1f} us   p95 {p95:7.1f} us   p99 {p99:7.1f} us"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=20_000)
    ap.add_argument("--limit", type=int, default=3)
    args = ap.parse_args()

    schema = FeatureSchema.from_yaml(ROOT / "examples" / "features.yaml")
    catalog = build_catalog(schema, args.candidates)
    engine = Engine(catalog, schema)
    t0 = time.perf_counter()
    engine.warm_up()
    warm_s = time.perf_counter() - t0

    rng = np.random.default_rng(7)
    rows = customers(schema, 256, rng)
    cands = engine.candidates_for("WEB")[: args.candidates].copy()
    n = len(cands)
    props = rng.uniform(0.01, 0.3, (256, n))
    context = {"page_type": "product", "hour_of_day": 14}
    now = time.time()

    # (a) the kernel alone, on the evaluation rows Engine.rank would build.
    code = 0  # WEB
    eval_rows = np.empty((256, len(schema.features) + 1))
    eval_rows[:, :-1] = rows
    eval_rows[:, -1] = code
    block = np.zeros(n, dtype=np.int32)
    scale = np.ones(n)
    mandatory = np.empty(n, dtype=np.bool_)
    stage = np.empty(n, dtype=np.int32)
    outs = [np.empty(n) for _ in range(4)]
    served = np.empty(args.limit, dtype=np.int64)
    static = engine._kernel_static  # the catalog arrays, exactly as rank() passes them
    kernel_ns = np.empty(args.iterations, dtype=np.int64)
    served_total = 0
    for it in range(args.iterations):
        i = it % 256
        t = time.perf_counter_ns()
        k = kernel.decide(cands, props[i], block, scale, eval_rows[i], now, code, False,
                          args.limit, catalog.arbitration.max_per_group, len(catalog.groups),
                          engine._block_ok, *static,
                          stage, outs[0], outs[1], outs[2], outs[3], mandatory, served)
        kernel_ns[it] = time.perf_counter_ns() - t
        served_total += k

    # (b) the whole Engine.rank call.
    rank_ns = np.empty(args.iterations, dtype=np.int64)
    for it in range(args.iterations):
        i = it % 256
        t = time.perf_counter_ns()
        engine.rank(rows[i], cands, props[i], "WEB", context, args.limit, now_s=now)
        rank_ns[it] = time.perf_counter_ns() - t

    # (c) exploration on top of the ranking: greedy is the baseline of the same run.
    from nba_service.engine.explore import select
    from nba_service.engine.explore_config import ControlTreatment, ExplorationPolicy, Method

    rankings = [engine.rank(rows[i], cands, props[i], "WEB", context, args.limit, now_s=now)
                for i in range(256)]
    variants = {
        "greedy (baseline)": (ExplorationPolicy(), None),
        "epsilon_greedy 0.1": (ExplorationPolicy(Method.EPSILON_GREEDY, epsilon=0.1), None),
        "thompson n=20, 128 draws": (ExplorationPolicy(Method.THOMPSON, draws=128), None),
        "control group (random)": (ExplorationPolicy(), ControlTreatment.RANDOM),
    }
    explore_rng = np.random.default_rng(3)
    explore_ns: dict[str, np.ndarray] = {}
    eligible = np.mean([np.isin(r.removed_stage, (0, 12, 13)).sum() for r in rankings])
    for name, (policy, control) in variants.items():
        samples = np.empty(args.iterations, dtype=np.int64)
        for it in range(args.iterations):
            r = rankings[it % 256]
            t = time.perf_counter_ns()
            select(r, args.limit, policy, action_groups=engine.action_groups,
                   n_groups=engine.n_groups, max_per_group=engine.max_per_group,
                   rng=explore_rng, control=control)
            samples[it] = time.perf_counter_ns() - t
        explore_ns[name] = samples

    print(f"command:    {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine:    {cpu_model()}, {os.cpu_count()} cpus, {platform.system()} "
          f"{platform.release()}")
    print(f"software:   Python {platform.python_version()}, numba {numba.__version__}, "
          f"numpy {np.__version__}")
    print(f"catalog:    {len(catalog)} actions, {catalog.compiled.programs.ops.size} "
          f"instructions; {n} candidates on WEB, limit {args.limit}, "
          f"{args.iterations} iterations, warm-up {warm_s:.2f} s")
    print(f"served:     {served_total / args.iterations:.2f} actions per decision on average")
    print(f"kernel:     {pct(kernel_ns)}")
    print(f"Engine.rank {pct(rank_ns)}")
    print(f"exploration after Engine.rank ({eligible:.1f} eligible candidates on average):")
    for name, samples in explore_ns.items():
        print(f"  {name:<26} {pct(samples)}")


if __name__ == "__main__":
    main()
