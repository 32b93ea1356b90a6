"""Micro-benchmark of contact policies and budgets for one decision (no I/O).

    .venv/bin/python loadtests/bench_policies.py [--candidates 100] [--iterations 20000]

Times what a decision adds for its policies, on the demo catalog repeated until WEB has N
candidates (every copy keeps its contact policy and budget): the policy pass the service runs
(`PolicyRead.evaluate`: one `policy_scan` Numba call over the history hash and the budget
replies as HGETALL returns them), the Python reference it replaces (`parse_history` +
`PolicyTable.evaluate`, same verdicts), and the whole `Engine.rank` with the resulting
`policy_block` / pacing levers. The baseline of the same run is `Engine.rank` without policies.
Histories: empty (a new customer), "typical" (5 actions with impressions, 1 reject, 1 accept,
contacts on 2 channels) and "heavy" (every candidate with max impressions, plus rejects and
accepts). Reports p50/p95/p99, never averages.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "loadtests"))

from bench_engine import build_catalog, cpu_model, customers, pct  # noqa: E402

from features.schema import FeatureSchema  # noqa: E402
from nba_service.engine.arbitration import Engine  # noqa: E402
from nba_service.engine.policies import PolicyTable  # noqa: E402
from nba_service.store.policies import PolicyRead  # noqa: E402

NOW = 1_700_000_000_000
DAY = 86_400_000


def history(ids: list[str], n_actions: int, rng: np.random.Generator) -> dict[bytes, bytes]:
    """A history hash of `n_actions` actions in the store's format (nba_service.store.policies)."""
    raw: dict[bytes, bytes] = {}
    for a in rng.choice(ids, size=min(n_actions, len(ids)), replace=False):
        times = sorted(int(NOW - rng.integers(1, 20) * DAY) for _ in range(3))
        raw[f"#i|{a}".encode()] = ",".join(map(str, times)).encode()
        raw[f"{a}|impression|n".encode()] = b"3"
        raw[f"{a}|impression|t".encode()] = str(times[-1]).encode()
    for a in rng.choice(ids, size=max(1, n_actions // 5), replace=False):
        raw[f"#r|{a}".encode()] = str(NOW - 3 * DAY).encode()
        raw[f"#a|{rng.choice(ids)}".encode()] = str(NOW - 90 * DAY).encode()
    for ch in ("WEB", "EMAIL"):
        raw[f"#k|{ch}".encode()] = str(NOW - DAY // 2).encode()
    return raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=20_000)
    args = ap.parse_args()
    schema = FeatureSchema.from_yaml(ROOT / "examples" / "features.yaml")
    catalog = build_catalog(schema, args.candidates)
    engine = Engine(catalog, schema)
    engine.warm_up()
    table = PolicyTable(catalog)
    cands = engine.candidates_for("WEB")[: args.candidates]
    rng = np.random.default_rng(1)
    rows = customers(schema, 256, rng)
    ids = [catalog.actions[int(i)].id for i in cands]
    read = PolicyRead(table, cands, "WEB", NOW)
    # The two HGETALL replies (day, hour) the fetch brings, as redis-py returns them.
    budget_replies = [{a: str(rng.integers(0, 3000)).encode() for a in read.budget_fields},
                      {a: b"50" for a in read.budget_fields}]
    cases = {"empty": [{}], "typical": [history(ids, 5, rng) for _ in range(64)],
             "heavy": [history(ids, len(ids), rng) for _ in range(64)]}
    prop = rng.uniform(0.01, 0.3, len(cands))
    n = args.iterations

    base = np.empty(n, dtype=np.int64)
    for k in range(n):
        row = rows[k % len(rows)]
        t0 = time.perf_counter_ns()
        engine.rank(row, cands, prop, "WEB", {}, 3, now_s=NOW / 1000)
        base[k] = time.perf_counter_ns() - t0

    print(f"command:    {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine:    {cpu_model()}, {os.cpu_count()} cpus, {platform.system()} "
          f"{platform.release()}")
    print(f"catalog:    {len(catalog)} actions, {len(cands)} candidates on WEB "
          f"({len(read.budget_ids)} with a budget), {n} iterations per row")
    print(f"Engine.rank without policies (baseline)      {pct(base)}")
    for name, hists in cases.items():
        ev = np.empty(n, dtype=np.int64)
        ref = np.empty(n, dtype=np.int64)
        total = np.empty(n, dtype=np.int64)
        blocked = 0
        for k in range(n):
            raw, row = hists[k % len(hists)], rows[k % len(rows)]
            t0 = time.perf_counter_ns()
            out = read.evaluate(cands, raw, budget_replies)
            t1 = time.perf_counter_ns()
            engine.rank(row, cands, prop, "WEB", {}, 3, policy_block=out.block,
                        now_s=NOW / 1000, lever_scale=out.lever_scale)
            t2 = time.perf_counter_ns()
            read.reference(cands, raw, budget_replies)
            ref[k] = time.perf_counter_ns() - t2
            ev[k], total[k] = t1 - t0, t2 - t0
            blocked += int(np.count_nonzero(out.block))
        print(f"{name:<8} history, {blocked / n:5.1f} blocked on average:")
        print(f"  policy pass (one policy_scan call)         {pct(ev)}")
        print(f"  Python reference (parse + evaluate)        {pct(ref)}")
        print(f"  policy pass + Engine.rank with policies    {pct(total)}")


if __name__ == "__main__":
    main()
