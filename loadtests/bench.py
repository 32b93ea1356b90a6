"""The service benchmark: Decide latency and throughput against the machine's floor, same run.

    .venv/bin/python loadtests/bench.py                  # the full sweep (about 10 minutes)
    .venv/bin/python loadtests/bench.py --quick          # a 1-minute smoke run
    .venv/bin/nba bench --help                           # the same command

For every candidate count N and worker count W it starts `nba serve --workers W` against a
seeded store, and drives it with P client processes (grpc.aio each):

  floor     gRPC echo (Admin.Echo), a bare Redis GET of a packed vector (same client library
            and socket as the service) and the service's scorer alone on the same N-candidate
            matrices -- one request in flight each; their sum (a convolution of the three
            distributions) is the floor a Decide cannot beat on this machine.
  closed    Decide at fixed concurrency (1 = one request in flight), and Echo at the highest
            concurrency to show what the load generator itself can push.
  open      Decide at fixed arrival rates (fractions of the measured saturation throughput),
            latency from the scheduled send time, so queueing shows.

Every phase records the CPU the clients, the server and the store used and what the rest of
the machine (other tenants) used, so a noisy run says so. Writes bench.json, bench.png and
bench.md into --out, and with --update-docs rewrites the generated part of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadtests import stats  # noqa: E402
from loadtests.loadgen import LoadGenerator, Result, Spec  # noqa: E402
from loadtests.sysinfo import CpuSample, cpu_between, machine  # noqa: E402

START_DELAY_S = 0.5  # spec delivery to P processes before the common start time


class Runner:
    """Runs phases on one load generator against one server and keeps their summaries."""

    def __init__(self, gen: LoadGenerator, args: argparse.Namespace,
                 cpu_groups: dict[str, list[int]], log: Callable[[str], None]) -> None:
        self.gen = gen
        self.args = args
        self.cpu_groups = cpu_groups
        self.log = log
        self.phases: dict[str, dict[str, Any]] = {}
        self.raw: dict[str, np.ndarray] = {}

    def _specs(self, kind: str, **kw: Any) -> list[Spec | None]:
        p = len(self.gen.conns)
        start_at = time.time() + START_DELAY_S
        base = {"kind": kind, "start_at": start_at,
                "warmup_s": kw.pop("warmup_s", self.args.warmup),
                "duration_s": kw.pop("duration_s", self.args.duration)}
        specs: list[Spec | None] = []
        if kind == "closed":
            total = kw.pop("concurrency")
            for i in range(p):
                share = total // p + (1 if i < total % p else 0)
                specs.append(Spec(**base, concurrency=share, **kw) if share else None)
        elif kind == "open":
            rate = kw.pop("rate")
            for i in range(p):
                specs.append(Spec(**base, rate=rate / p, offset_s=i / rate, **kw))
        else:  # single-process floor phases
            specs = [Spec(**base, **kw)] + [None] * (p - 1)
        return specs

    def run(self, name: str, kind: str, record: bool = True, **kw: Any) -> dict[str, Any]:
        specs = self._specs(kind, **kw)
        first = next(s for s in specs if s is not None)
        window_start = first.start_at + first.warmup_s
        window = first.duration_s
        groups = {"clients": self.gen.pids, **self.cpu_groups}
        cpu: dict[str, float] = {}

        def sample_cpu() -> None:
            # Sampled at the measurement window's edges; this thread only sleeps meanwhile.
            nonlocal cpu
            time.sleep(max(0.0, window_start - time.time()))
            a = CpuSample(groups)
            time.sleep(window)
            cpu = cpu_between(a, CpuSample(groups), window)

        import threading

        t = threading.Thread(target=sample_cpu, daemon=True)
        t.start()
        results = self.gen.run(specs)
        t.join()
        summary = merge(name, kind, first, results, window, specs)
        summary["cpu_cores"] = cpu
        if record:
            self.phases[name] = summary
            self.raw[name] = np.concatenate(
                [np.frombuffer(r.latencies_ns, dtype=np.int64) for r in results]
            ) if results else np.empty(0, np.int64)
            lat = summary["latency_us"]
            self.log(f"    {name:<22} n={summary['count']:>7}  {summary['throughput']:>8.0f}/s  "
                     f"p50 {lat['p50']:>8.1f}  p99 {lat['p99']:>8.1f}  p99.9 {lat['p999']:>8.1f} us"
                     f"  errors {summary['error_count']}  cpu {cpu}")
        return summary


def merge(name: str, kind: str, spec: Spec, results: list[Result], window: float,
          specs: list[Spec | None]) -> dict[str, Any]:
    lat = np.concatenate([np.frombuffer(r.latencies_ns, dtype=np.int64) for r in results])
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r.errors.items():
            errors[k] = errors.get(k, 0) + v
    out: dict[str, Any] = {
        "name": name, "kind": kind, "rpc": spec.rpc, "duration_s": window,
        "count": int(lat.size), "throughput": stats.throughput(int(lat.size), window),
        "latency_us": stats.summarize(lat), "errors": errors,
        "error_count": sum(errors.values()) + sum(r.dropped for r in results),
        "dropped": sum(r.dropped for r in results),
        "client_cpu_s": sum(r.cpu_s for r in results),
    }
    if kind == "closed":
        out["concurrency"] = sum(s.concurrency for s in specs if s is not None)
    if kind == "open":
        out["offered_rate"] = sum(s.rate for s in specs if s is not None)
        lag = np.concatenate([np.frombuffer(r.send_lag_ns, dtype=np.int64) for r in results])
        out["send_lag_us"] = stats.summarize(lag)
    if results and any(len(r.stages["total"]) for r in results):
        out["server_stages_us"] = stats.stage_summary({
            k: np.concatenate([np.frombuffer(r.stages[k], dtype=np.int64) for r in results])
            for k in results[0].stages
        })
    if kind == "score":
        out["scorer"] = results[0].info
    return out


def floor_summary(runner: Runner) -> dict[str, Any]:
    parts = [runner.raw["floor_echo"], runner.raw["floor_redis_get"], runner.raw["floor_score"]]
    comp = stats.composite(parts)
    return {"latency_us": stats.summarize(comp),
            "parts": ["floor_echo", "floor_redis_get", "floor_score"]}


def run_phases(runner: Runner, n: int, workers: int, model: Path, catalog: Path, schema: Path,
               args: argparse.Namespace, log: Callable[[str], None],
               profile_pid: int | None) -> dict[str, Any]:
    """The phases of one configuration, in order; returns its summary."""
    runner.run("warmup", "closed", record=False, concurrency=2 * workers, warmup_s=0.0,
               duration_s=min(2.0, args.duration))
    runner.run("floor_echo", "closed", rpc="echo", concurrency=1)
    runner.run("floor_redis_get", "redis")
    backend = runner.gen.server_details.get("model_backend") or "auto"
    runner.run("floor_score", "score", candidates=n, model=str(model), catalog=str(catalog),
               schema=str(schema), backend=backend)
    for c in args.concurrency:
        runner.run(f"decide_c{c}", "closed", concurrency=c)
    cmax = max(args.concurrency)
    runner.run(f"echo_c{cmax}", "closed", rpc="echo", concurrency=cmax)
    sat = max(runner.phases[f"decide_c{c}"]["throughput"] for c in args.concurrency)
    for f in args.open_fractions:
        rate = max(10.0, round(sat * f, -1))
        runner.run(f"decide_open_{int(f * 100)}pct", "open", rate=rate)
    if profile_pid is not None:
        from loadtests.profile import profile_phase

        profile_phase(runner, profile_pid, args, log)
    return {"candidates": n, "workers": workers, "floor": floor_summary(runner),
            "model_backend": backend,
            "saturation_throughput": sat, "phases": runner.phases}


def run_config(n: int, workers: int, args: argparse.Namespace, fixture: Any, redis_url: str,
               store_pid: int | None, log: Callable[[str], None]) -> dict[str, Any]:
    """Start `nba serve --workers W` on the N-candidate catalog, run the phases, stop it."""
    from loadtests.server_proc import ServerProcess
    from nba_service.store.embedded import free_port

    server = ServerProcess(workers=workers, port=free_port(), redis_url=redis_url,
                           model=fixture.model, catalog=fixture.catalog(n),
                           log_path=args.workdir / f"server_{n}_{workers}.log")
    gen: LoadGenerator | None = None
    try:
        pids = server.wait_ready()
        log(f"  N={n} W={workers}: server {server.target} workers {pids}")
        gen = LoadGenerator(args.clients, server.target, redis_url, list(fixture.customer_ids),
                            workers, args.conns_per_worker)
        groups = {"server": server.all_pids(), "store": [store_pid] if store_pid else []}
        runner = Runner(gen, args, groups, log)
        profile = args.profile and n == args.profile_candidates and workers == 1
        out = run_phases(runner, n, workers, fixture.model, fixture.catalog(n),
                         fixture.schema_path, args, log, pids[0] if profile else None)
        return {**out, "target": server.target, "worker_pids": pids}
    finally:
        if gen is not None:
            gen.close()
        server.stop()


def run_external(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """Drive a service that is already running (--target): its workers are discovered, the
    floor uses --redis-url, --model and --catalog, which must be what it serves."""
    import yaml

    from loadtests.server_proc import worker_pids

    missing = [o for o in ("redis_url", "model", "catalog") if getattr(args, o) is None]
    if missing:
        raise SystemExit(f"--target needs {', '.join('--' + m.replace('_', '-') for m in missing)}")
    doc = yaml.safe_load(args.catalog.read_text(encoding="utf-8"))
    n = sum(args.channel in a.get("channels", ()) for a in doc["actions"])
    seen = asyncio.run(worker_pids(args.target, attempts=16))
    workers = max(1, len(seen))
    ids = customer_ids(args)
    log(f"  {args.target}: {workers} worker(s) {sorted(seen)}, N={n} on {args.channel}")
    gen = LoadGenerator(args.clients, args.target, args.redis_url, ids, workers,
                        args.conns_per_worker)
    try:
        pids = [int(p) for p in seen if p.isdigit()]
        runner = Runner(gen, args, {"server": pids}, log)
        profile = pids[0] if args.profile and pids else None
        out = run_phases(runner, n, workers, args.model, args.catalog, args.features, args, log,
                         profile)
        return {**out, "target": args.target, "worker_pids": pids}
    finally:
        gen.close()


def run_sweep(args: argparse.Namespace, fixture: Any,
              log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every (N, W) configuration against one private, seeded store."""
    from tqdm import tqdm

    from loadtests.fixture import seed_store
    from nba_service.store.embedded import EmbeddedRedis

    configs: list[dict[str, Any]] = []
    with EmbeddedRedis() as store:
        loaded = seed_store(fixture, store.url)
        store_pid = int(store.client().info("server")["process_id"])
        log(f"store {store.url}: {loaded} customers")
        plan = [(n, w) for n in args.candidates for w in args.workers]
        for n, w in tqdm(plan, desc="configurations", unit="config"):
            configs.append(run_config(n, w, args, fixture, store.url, store_pid, log))
    return configs


def customer_ids(args: argparse.Namespace) -> list[str]:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    path = args.customers_file
    table = (pq.read_table(path, columns=["customer_id"]) if path.suffix == ".parquet"
             else pcsv.read_csv(path).select(["customer_id"]))
    return [str(x) for x in table.column(0).to_pylist()]


def evaluate(configs: list[dict[str, Any]], n_ref: int) -> list[dict[str, object]]:
    """The published targets, each with how far it is met or missed."""
    from loadtests.targets import targets

    return [t.as_dict() for t in targets(configs, n_ref)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="nba bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)

    def ints(s: str) -> list[int]:
        return [int(x) for x in s.split(",") if x]

    def floats(s: str) -> list[float]:
        return [float(x) for x in s.split(",") if x]

    p.add_argument("--candidates", type=ints, default=[20, 100, 500],
                   help="candidate counts N to sweep (default 20,100,500)")
    p.add_argument("--workers", type=ints, default=[1, 2], help="worker counts (default 1,2)")
    p.add_argument("--concurrency", type=ints, default=[1, 4, 16, 64],
                   help="closed-loop concurrencies (default 1,4,16,64)")
    p.add_argument("--open-fractions", type=floats, default=[0.25, 0.5, 0.75, 0.9],
                   help="open-loop rates as fractions of the measured saturation throughput")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per phase")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per phase")
    p.add_argument("--clients", type=int, default=2, help="load generator processes")
    p.add_argument("--conns-per-worker", type=int, default=2,
                   help="connections per client process per server worker")
    p.add_argument("--customers", type=int, default=10_000, help="customers in the store")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks",
                   help="directory for bench.json, bench.png, bench.md")
    p.add_argument("--workdir", type=Path, default=ROOT / ".bench",
                   help="catalogs, model, data and server logs (reused when unchanged)")
    p.add_argument("--profile", action="store_true",
                   help="py-spy profile of one worker under load (N = --profile-candidates)")
    p.add_argument("--profile-candidates", type=int, default=100)
    p.add_argument("--update-docs", type=Path, nargs="?", const=ROOT / "docs" / "benchmarks.md",
                   help="rewrite the generated section of docs/benchmarks.md")
    ext = p.add_argument_group("a service that is already running")
    ext.add_argument("--target", help="HOST:PORT of a running service (no server is started)")
    ext.add_argument("--redis-url", help="its store (for the Redis floor)")
    ext.add_argument("--model", type=Path, help="the model artifact it serves (scorer floor)")
    ext.add_argument("--catalog", type=Path, help="the catalog it serves (N = its actions on "
                     "--channel)")
    ext.add_argument("--features", type=Path, default=ROOT / "examples" / "features.yaml")
    ext.add_argument("--channel", default="WEB")
    ext.add_argument("--customers-file", type=Path,
                     help="Parquet/CSV with a customer_id column: the ids to ask for (default: "
                     "the bench's own customers, .bench/customers.parquet)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: N=100, W=1,2, 2 s phases, concurrency 1,16")
    args = p.parse_args(argv)
    if args.quick:
        args.candidates, args.duration, args.warmup = [100], 2.0, 0.5
        args.concurrency, args.open_fractions = [1, 16], [0.5, 0.9]
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from loadtests.fixture import build_fixture
    from loadtests.report import write_outputs

    def log(msg: str) -> None:
        tqdm.write(msg)

    started = datetime.now(UTC)
    log(f"nba bench: N={args.candidates} workers={args.workers} clients={args.clients}")
    fixture = build_fixture(args.workdir, tuple(args.candidates), customers=args.customers,
                            log=log)
    configs: list[dict[str, Any]] = []
    if args.target:
        if args.customers_file is None:
            args.customers_file = fixture.customers_file
        configs.append(run_external(args, log))
    else:
        configs += run_sweep(args, fixture, log)
    doc: dict[str, Any] = {
        "command": "nba bench " + " ".join(args.argv),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "setup": {"clients": args.clients, "conns_per_worker": args.conns_per_worker,
                  "duration_s": args.duration, "warmup_s": args.warmup,
                  "customers": len(fixture.customer_ids), "model_trees": 200,
                  "channel": args.channel, "limit": 3},
        "configs": configs,
        "targets": evaluate(configs, 100),
    }
    paths = write_outputs(doc, args.out, args.update_docs)
    for t in doc["targets"]:
        log(str(t["summary"]))
    log("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
