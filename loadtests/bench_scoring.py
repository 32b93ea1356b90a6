"""Scoring backends: one customer x N candidate actions, every backend against Booster.predict.

    .venv/bin/python loadtests/bench_scoring.py [--trees 200] [--leaves 31] [--features 70]
        [--sizes 1,10,100,500] [--iterations 1000] [--seed 0] [--action-effect kind|id]
        [--model-cache FILE]

A synthetic propensity model (200 trees of 31 leaves over 70 features, of which 6 describe
the action: id, type, group, value and two numeric attributes; the rest are customer and
context features, some categorical, some with missing values) is trained first; by default
customers respond to the kind of action (type, group) as in the simulator, `--action-effect id`
gives every action its own response (a stress case: most splits then test the action id,
which the shared-row kernel cannot share). Each timed
call scores one customer x N actions, the serving shape: the customer's columns are equal on
all N rows. Customers rotate through a pool of 256 so no backend scores the same matrix twice
in a row. "compiled (default)" is what the service runs: the customer x action decomposition
(masked.py, the action columns known from the schema) with the tree walk as fallback; "tree
walk only" and "rowwise" are its other kernels. All backends, and the baseline
`lightgbm.Booster.predict(x, num_threads=1)`, see the same inputs in the same run;
p50/p95/p99 per call and the p50 speed-up over the baseline are printed. "compiled (all rows
differ)" scores N unrelated rows: the worst case, where nothing is shared and the default
falls back to the tree walk.

The last part measures where scoring should run inside an async handler: inline on the event
loop versus `loop.run_in_executor` on a thread (the thread hop alone, and each backend at N=100).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightgbm as lgb
import numba
import numpy as np
import onnxruntime
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nba_service.scoring.compiled import CompiledScorer, warm_up  # noqa: E402
from nba_service.scoring.lightgbm_native import LightGBMScorer  # noqa: E402
from nba_service.scoring.onnx_runtime import OnnxScorer  # noqa: E402
from nba_service.scoring.selection import select_backend  # noqa: E402
from training.export import convert_to_onnx  # noqa: E402

N_ACTION_COLS = 6
N_ACTIONS = 500
POOL = 256


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_data(n_rows: int, n_features: int, rng: np.random.Generator, action_effect: str = "kind"
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """(x, y, action table, categorical columns). Customer columns first, action columns last."""
    n_cust = n_features - N_ACTION_COLS
    actions = np.empty((N_ACTIONS, N_ACTION_COLS), dtype=np.float32)
    actions[:, 0] = np.arange(N_ACTIONS)  # action id (categorical)
    actions[:, 1] = rng.integers(0, 6, N_ACTIONS)  # type (categorical)
    actions[:, 2] = rng.integers(0, 12, N_ACTIONS)  # group (categorical)
    actions[:, 3] = rng.lognormal(3, 1, N_ACTIONS)  # value
    actions[:, 4:] = rng.normal(size=(N_ACTIONS, N_ACTION_COLS - 4))
    cust = rng.normal(size=(n_rows, n_cust)).astype(np.float32)
    cust[:, 0] = rng.integers(0, 8, n_rows)  # segment (categorical)
    cust[:, 1] = rng.integers(0, 30, n_rows)  # region (categorical)
    cust[:, 2] = rng.integers(0, 7, n_rows)  # channel (categorical)
    cust[rng.random((n_rows, n_cust)) < 0.05] = np.nan
    cust[:, :3] = np.nan_to_num(cust[:, :3])
    which = rng.integers(0, N_ACTIONS, n_rows)
    x = np.hstack([cust, actions[which]]).astype(np.float32)
    w = rng.normal(size=n_cust) * 0.3
    clean = np.nan_to_num(cust[:, 3:11])
    if action_effect == "id":
        # Stress case: every action has its own response to the customer features, so the
        # trees split mostly on the action id.
        affinity = rng.normal(size=(N_ACTIONS, 8))[which]
    else:
        # The simulator's shape: customers respond to the kind of action (type and group),
        # plus a small effect of the individual action.
        by_type = rng.normal(size=(6, 8))[actions[which, 1].astype(int)]
        by_group = rng.normal(size=(12, 8))[actions[which, 2].astype(int)] * 0.5
        affinity = by_type + by_group + 0.2 * rng.normal(size=(N_ACTIONS, 8))[which]
    logit = (np.nan_to_num(cust) @ w + np.einsum("ij,ij->i", clean, affinity)
             + (cust[:, 0] == actions[which, 1]) + 0.1 * np.log(actions[which, 3]) - 1.5)
    y = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    categorical = [0, 1, 2, n_cust, n_cust + 1, n_cust + 2]
    return x, y, actions, categorical


def blocks(x: np.ndarray, actions: np.ndarray, n: int, rng: np.random.Generator,
           shared: bool = True) -> list[np.ndarray]:
    out = []
    n_cust = x.shape[1] - N_ACTION_COLS
    for _ in range(POOL):
        if shared:
            b = np.repeat(x[rng.integers(0, len(x))][None, :], n, axis=0)
            b[:, n_cust:] = actions[rng.choice(N_ACTIONS, size=n, replace=False)]
        else:
            b = x[rng.integers(0, len(x), n)].copy()
        out.append(np.ascontiguousarray(b, dtype=np.float32))
    return out


def timed(fn: Callable[[np.ndarray], object], inputs: list[np.ndarray], iterations: int
          ) -> np.ndarray:
    for b in inputs[:20]:
        fn(b)
    samples = np.empty(iterations, dtype=np.int64)
    for i in range(iterations):
        b = inputs[i % len(inputs)]
        t0 = time.perf_counter_ns()
        fn(b)
        samples[i] = time.perf_counter_ns() - t0
    return samples


def pct(samples_ns: np.ndarray) -> str:
    p = np.percentile(samples_ns, [50, 95, 99]) / 1000
    return f"p50 {p[0]:8.1f} us  p95 {p[1]:8.1f} us  p99 {p[2]:8.1f} us"


async def loop_costs(scorers: dict[str, Callable[[np.ndarray], object]], inputs: list[np.ndarray],
                     iterations: int) -> list[tuple[str, np.ndarray]]:
    loop = asyncio.get_running_loop()
    rows: list[tuple[str, np.ndarray]] = []
    with ThreadPoolExecutor(1) as pool:
        def noop(b: np.ndarray) -> None:
            return None

        for label, fn, offload in [("thread hop alone (no-op)", noop, True),
                                   *[(f"{name} inline", fn, False)
                                     for name, fn in scorers.items()],
                                   *[(f"{name} run_in_executor", fn, True)
                                     for name, fn in scorers.items()]]:
            samples = np.empty(iterations, dtype=np.int64)
            for i in range(iterations + 20):
                b = inputs[i % len(inputs)]
                t0 = time.perf_counter_ns()
                if offload:
                    await loop.run_in_executor(pool, fn, b.copy())
                else:
                    fn(b)
                if i >= 20:
                    samples[i - 20] = time.perf_counter_ns() - t0
            rows.append((label, samples))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trees", type=int, default=200)
    ap.add_argument("--leaves", type=int, default=31)
    ap.add_argument("--features", type=int, default=70)
    ap.add_argument("--rows", type=int, default=60_000, help="training rows of the model")
    ap.add_argument("--sizes", default="1,10,100,500", help="candidates per customer")
    ap.add_argument("--iterations", type=int, default=1000,
                    help="timed calls per backend at N=100 (scaled for the other sizes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--action-effect", choices=("kind", "id"), default="kind",
                    help="kind: customers respond to action type and group (the simulator's "
                         "shape); id: every action responds on its own (splits mostly on id)")
    ap.add_argument("--model-cache", type=Path, default=None,
                    help="LightGBM text file: reused if present (same arguments), else written")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    sizes = [int(s) for s in args.sizes.split(",")]

    t0 = time.perf_counter()
    x, y, actions, categorical = make_data(args.rows, args.features, rng, args.action_effect)
    params = {"objective": "binary", "num_leaves": args.leaves, "min_data_in_leaf": 20,
              "learning_rate": 0.05, "verbosity": -1, "num_threads": os.cpu_count() or 1,
              "seed": args.seed, "max_cat_to_onehot": 8}
    if args.model_cache is not None and args.model_cache.exists():
        booster = lgb.Booster(model_file=str(args.model_cache))
    else:
        booster = lgb.train(params, lgb.Dataset(x, y, categorical_feature=categorical),
                            num_boost_round=args.trees)
        if args.model_cache is not None:
            booster.save_model(str(args.model_cache))
    text = booster.model_to_string()
    leaves = [t["num_leaves"] for t in booster.dump_model()["tree_info"]]
    ensemble = CompiledScorer.from_model_text(text, "bench").ensemble
    action_split_share = float(np.mean(ensemble.node_feature >= args.features - N_ACTION_COLS))
    train_s = time.perf_counter() - t0

    names = [f"f{i}" for i in range(args.features)]
    warm_up()
    reference = LightGBMScorer.from_string(text, "bench", names)
    onnx_bytes = convert_to_onnx(booster)
    action_cols = list(range(args.features - N_ACTION_COLS, args.features))
    backends: dict[str, Callable[[np.ndarray], object]] = {
        "compiled (default)": CompiledScorer.from_model_text(
            text, "bench", names, action_columns=action_cols).predict,
        "compiled, tree walk only": CompiledScorer.from_model_text(text, "bench", names).predict,
        "compiled rowwise": CompiledScorer.from_model_text(text, "bench", names,
                                                           mode="rowwise").predict,
        "onnx": OnnxScorer(onnx_bytes, "bench", names).predict,
        "lightgbm scorer": reference.predict,
    }
    golden = x[rng.integers(0, len(x), 64)]
    chosen = select_backend("auto", reference, text, onnx_bytes, golden, action_cols,
                            categorical)

    def baseline(b: np.ndarray) -> object:
        return booster.predict(b, num_threads=1)

    print(f"command:    {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine:    {cpu_model()}, {os.cpu_count()} cpus, {platform.system()} "
          f"{platform.release()}")
    print(f"software:   Python {platform.python_version()}, lightgbm {lgb.__version__}, "
          f"numba {numba.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"numpy {np.__version__}")
    print(f"model:      {booster.num_trees()} trees, {max(leaves)} leaves max "
          f"({np.mean(leaves):.1f} mean), {args.features} features ({N_ACTION_COLS} per "
          f"action), trained on {args.rows} rows in {train_s:.1f} s")
    print(f"            action effect '{args.action_effect}': {action_split_share:.0%} of the "
          f"splits test a per-action column")
    print(f"auto picks: {chosen.scorer.backend}; parity: " + ", ".join(
        f"{k} {v.summary()}" for k, v in chosen.checks.items()))
    for n in sizes:
        iterations = max(200, int(args.iterations * min(10.0, 100 / max(n, 10))))
        shared = blocks(x, actions, n, rng)
        base = timed(baseline, shared, iterations)
        print(f"\nN = {n} candidates, {iterations} calls each")
        print(f"  {'Booster.predict (baseline)':<28} {pct(base)}")
        base_p50 = float(np.percentile(base, 50))
        worst: dict[str, float] = {}
        for name, fn in tqdm(backends.items(), desc=f"N={n}", leave=False, file=sys.stderr):
            samples = timed(fn, shared, iterations)
            diffs = [np.abs(np.asarray(fn(b)) - booster.predict(b)).max() for b in shared[:32]]
            worst[name] = float(max(diffs))
            print(f"  {name:<28} {pct(samples)}  x{base_p50 / np.percentile(samples, 50):5.1f}"
                  f"  max|diff| {worst[name]:.1e}")
        unrelated = blocks(x, actions, n, rng, shared=False)
        base_u = timed(baseline, unrelated, iterations)
        comp_u = timed(backends["compiled (default)"], unrelated, iterations)
        print(f"  {'compiled (all rows differ)':<28} {pct(comp_u)}  x"
              f"{np.percentile(base_u, 50) / np.percentile(comp_u, 50):5.1f}"
              f"  (baseline on the same rows: p50 {np.percentile(base_u, 50) / 1000:.1f} us)")

    print("\nevent loop, N = 100: inline vs loop.run_in_executor (1 worker thread)")
    inputs = blocks(x, actions, 100, rng)
    rows = asyncio.run(loop_costs({"compiled": backends["compiled (default)"],
                                   "lightgbm": reference.predict}, inputs,
                                  max(200, args.iterations // 2)))
    for label, samples in rows:
        print(f"  {label:<28} {pct(samples)}")


if __name__ == "__main__":
    main()
