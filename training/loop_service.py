"""A live service for the closed loop: its own store with the loop's customers, a catalog that
explores, and a model registry the service watches. Used by `python -m training loop`,
`examples/closed_loop.py` and the closed-loop integration test."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from features.schema import FeatureSchema
from training.closed_loop import ClosedLoop, LoopConfig, RoundResult
from training.simulate import Simulator

__all__ = ["LoopService", "exploring_catalog", "format_table", "loop_service", "run_loop"]

logger = logging.getLogger("nba.training")


def exploring_catalog(source: Path, out: Path, channels: Sequence[str], epsilon: float,
                      objective: str = "accept") -> Path:
    """A copy of `source` whose loop channels explore epsilon-greedily and have no control
    group (exploration is what lets the loop learn about actions it would not serve), and
    without mandatory actions. `objective="accept"` also makes every action worth 1 with no
    lever or context weight; `"value"` keeps the catalog's business values."""
    doc = yaml.safe_load(source.read_text(encoding="utf-8"))
    # A mandatory notice bypasses arbitration and would take the loop's single slot whatever
    # the model says; the loop measures the model-driven choice, so it is an ordinary action.
    for action in doc.get("actions", []):
        action.pop("mandatory", None)
        if objective == "accept":
            # Every acceptance is worth 1 and nothing else weighs in: arbitration ranks by
            # propensity alone, the quantity the model controls, and the oracle maximises the
            # same thing. (With business values spanning 1 to thousands, value alone decides
            # most rankings and the model has little left to improve: docs/closed-loop-results.md.)
            action["value"] = 1
            action.pop("lever", None)
            action.pop("context_weights", None)
        elif objective != "value":
            raise ValueError(f"objective {objective!r}: use accept or value")
    doc["exploration"] = {
        "default": {"method": "greedy"},
        "overrides": [{"channel": c, "method": "epsilon_greedy", "epsilon": epsilon}
                      for c in channels],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return out


@dataclass
class LoopService:
    loop: ClosedLoop
    server: Any
    target: str


@asynccontextmanager
async def loop_service(
    cfg: LoopConfig, workdir: Path, *, features: Path, catalog: Path, epsilon: float = 0.1,
    model_watch_interval_s: float = 0.2,
) -> AsyncIterator[LoopService]:
    """Start store + server (registry-watching, exploring), load the customers, yield."""
    import grpc
    import redis

    from nba_service._proto.nba.v1 import decisioning_pb2_grpc
    from nba_service.demo import write_customers
    from nba_service.engine.catalog import load_catalog
    from nba_service.runtime import Runtime
    from nba_service.server import NbaServer
    from nba_service.settings import Settings
    from nba_service.store.embedded import EmbeddedRedis
    from nba_service.store.loader import load_file

    schema = FeatureSchema.from_yaml(features)
    cat_path = exploring_catalog(catalog, workdir / "catalog.yaml", cfg.channels, epsilon,
                                 cfg.objective)
    cat = load_catalog(cat_path, schema)
    sim = Simulator(schema, cat, seed=cfg.seed)
    registry = workdir / "registry"
    registry.mkdir(parents=True, exist_ok=True)
    with EmbeddedRedis() as store:
        people = sim.customers(cfg.customers + cfg.eval_customers)
        data = workdir / "customers.parquet"
        write_customers(data, people, schema)
        client = redis.Redis.from_url(store.url)
        report = load_file(data, client, schema, progress=False)
        if report.rejected:
            raise RuntimeError(f"{report.rejected} customers rejected by the loader")
        settings = Settings(host="127.0.0.1", port=0, redis_url=store.url,
                            feature_schema=features, catalog=cat_path, model_registry=registry,
                            model_watch_interval_s=model_watch_interval_s,
                            # Client and server share one process and event loop here, on
                            # shared cores: generous budgets keep a busy moment from turning
                            # into fallback answers.
                            redis_timeout_s=2.0, max_deadline_s=10.0)
        server = NbaServer(settings, Runtime(settings))
        await server.start()
        try:
            assert server.address is not None
            target = server.address.target
            async with grpc.aio.insecure_channel(target) as ch:
                loop = ClosedLoop(cfg, schema, cat, sim, decisioning_pb2_grpc.DecisioningStub(ch),
                                  decisioning_pb2_grpc.AdminStub(ch), client, registry, workdir)
                yield LoopService(loop=loop, server=server, target=target)
        finally:
            await server.stop(grace=0.5)
            client.close()


def format_table(results: Sequence[RoundResult]) -> str:
    lines = [f"{'round':>5} {'train rows':>10} {'random':>8} {'current':>8} {'oracle':>8} "
             f"{'rules':>8} {'cur/oracle':>10} {'cur/rules':>9}  model"]
    for r in results:
        rules = r.current / r.oracle_rules if r.oracle_rules else 0.0
        lines.append(f"{r.round:>5} {r.train_rows:>10} {r.random:>8.2f} {r.current:>8.2f} "
                     f"{r.oracle:>8.2f} {r.oracle_rules:>8.2f} {r.share_of_oracle:>10.1%} "
                     f"{rules:>9.1%}  {r.model_version}")
    return "\n".join(lines)


def plot(results: Sequence[RoundResult], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r.round for r in results]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(x, [r.oracle for r in results], "--", color="green", label="oracle (all actions)")
    ax.plot(x, [r.oracle_rules for r in results], ":", color="darkgreen",
            label="oracle (actions the rules allow)")
    ax.plot(x, [0.8 * r.oracle for r in results], "-", color="lightgreen", lw=0.8,
            label="80% of oracle")
    ax.plot(x, [r.current for r in results], "o-", color="C0", label="served policy")
    ax.plot(x, [r.random for r in results], "--", color="grey", label="random")
    ax.set(xlabel="round (model retrained and hot-swapped after each)",
           ylabel="true expected value per decision", title="Closed loop against the live service")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


async def run_loop(cfg: LoopConfig, workdir: Path, *, features: Path, catalog: Path,
                   epsilon: float, plot_path: Path | None, quiet: bool = False
                   ) -> list[RoundResult]:
    async with loop_service(cfg, workdir, features=features, catalog=catalog,
                            epsilon=epsilon) as svc:
        if not quiet:
            print(f"service at {svc.target}; registry {workdir / 'registry'}", flush=True)

        def show(r: RoundResult) -> None:
            if not quiet:
                print(format_table([r]).splitlines()[-1] if r.round else format_table([r]),
                      flush=True)

        results = await svc.loop.run(on_round=show)
    if plot_path is not None:
        plot(results, plot_path)
    return results
