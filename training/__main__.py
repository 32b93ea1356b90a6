"""`python -m training`: simulate data, train, export, verify and publish propensity models."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from features.schema import FeatureSchema, SchemaError
from training.commands import add_parsers as add_eval_parsers
from training.commands import cmd_bandit, cmd_evaluate, cmd_loop, print_ope
from training.config import ConfigError, TrainConfig, load_config

logger = logging.getLogger("nba.training")

EPILOG = """examples:
  python -m training simulate --config examples/train.yaml --out var/data/impressions.parquet
  python -m training train --config examples/train.yaml --out var/models/propensity-1
  python -m training train --config examples/train.yaml --dataset var/data/impressions.parquet \\
      --out var/models/propensity-2
  python -m training verify --artifact var/models/propensity-1 --schema examples/features.yaml
  python -m training publish --artifact var/models/propensity-1 --registry var/registry \\
      --schema examples/features.yaml
  python -m training train --config examples/train.yaml --out var/models/p --report var/report
  python -m training train --config examples/train-dask.yaml --out var/models/p-dask
  python -m training evaluate --artifact var/models/p --logs var/export \\
      --schema examples/features.yaml --catalog examples/catalog.yaml --out var/eval
  python -m training bandit --table obd.csv --preset obd --out var/obd-report
  python -m training loop --rounds 5 --plot var/closed_loop.png
See docs/training.md for the config fields and the artifact format."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("simulate", help="simulate impressions and outcomes to a Parquet file",
                       description="Simulate customers, serve actions with a logging policy "
                                   "and write the impressions (features, outcome, logged "
                                   "propensity) as Parquet.")
    s.add_argument("--config", required=True, type=Path, help="training config YAML")
    s.add_argument("--out", required=True, type=Path, help="output .parquet file")
    s.add_argument("--customers", type=int, help="override simulation.customers")
    s.add_argument("--impressions", type=int, help="override simulation.impressions_per_customer")
    s.add_argument("--logging-policy", choices=["random", "epsilon_greedy"],
                   help="override simulation.logging_policy")
    s.add_argument("--seed", type=int, help="override the config seed")
    s.add_argument("--profiles", type=Path,
                   help="also write the simulated customer profiles as JSON lines")

    t = sub.add_parser("train", help="train a model and write a verified artifact",
                       description="Simulate (or read --dataset), train LightGBM, print "
                                   "validation AUC / log loss and write an artifact to --out.")
    t.add_argument("--config", required=True, type=Path, help="training config YAML")
    t.add_argument("--out", required=True, type=Path, help="artifact directory to create")
    t.add_argument("--dataset", type=Path, help="Parquet dataset (overrides the config)")
    t.add_argument("--logs", type=Path,
                   help="train on an `nba logs export` directory (logged, point-in-time rows)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    t.add_argument("--dask", action="store_true",
                   help="train with lightgbm.dask (config `dask:`; a LocalCluster unless "
                        "--scheduler is given)")
    t.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786 "
                                       "(implies --dask); with --dataset/--logs the workers "
                                       "read the Parquet files themselves")
    t.add_argument("--report", type=Path,
                   help="also write an evaluation report (metrics + OPE) on the held-out rows")

    e = sub.add_parser("export", help="package an existing LightGBM text model as an artifact",
                       description="Wrap a model.txt trained elsewhere: evaluate it on a "
                                   "dataset, build the golden set and write the artifact.")
    e.add_argument("--model", required=True, type=Path, help="LightGBM text model file")
    e.add_argument("--dataset", required=True, type=Path, help="Parquet dataset to evaluate on")
    e.add_argument("--schema", required=True, type=Path, help="feature schema YAML")
    e.add_argument("--name", default="propensity", help="model name (model_version prefix)")
    e.add_argument("--out", required=True, type=Path, help="artifact directory to create")
    e.add_argument("--golden-rows", type=int, default=64, help="dataset rows in golden.npz")
    e.add_argument("--seed", type=int, default=7, help="seed for sampling the golden rows")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    add_eval_parsers(sub)

    v = sub.add_parser("verify", help="run the service's artifact checks",
                       description="Verify hashes, schema, feature names and the golden set.")
    v.add_argument("--artifact", required=True, type=Path, help="artifact directory")
    v.add_argument("--schema", required=True, type=Path, help="feature schema YAML")

    u = sub.add_parser("publish", help="copy a verified artifact into a registry",
                       description="Verify, copy to REGISTRY/<slot>/versions/<version>/ and "
                                   "atomically point REGISTRY/<slot>/current at it.")
    u.add_argument("--artifact", required=True, type=Path, help="artifact directory")
    u.add_argument("--registry", required=True, type=Path, help="registry root directory")
    u.add_argument("--schema", required=True, type=Path, help="feature schema YAML")
    u.add_argument("--slot", default="propensity", help="registry slot (default: propensity)")
    u.add_argument("--no-current", action="store_true", help="publish without making current")
    return p


def _load_inputs(cfg: TrainConfig) -> tuple[FeatureSchema, Any]:
    from nba_service.engine.catalog import load_catalog

    schema = FeatureSchema.from_yaml(cfg.schema_path)
    return schema, load_catalog(cfg.catalog_path, schema)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from training.dataset import simulate_impressions
    from training.simulate import Simulator

    cfg = load_config(args.config)
    seed = cfg.seed if args.seed is None else args.seed
    sim_cfg = cfg.simulation
    schema, catalog = _load_inputs(cfg)
    sim = Simulator(schema, catalog, seed=seed if sim_cfg.seed is None else sim_cfg.seed)
    n = args.customers or sim_cfg.customers
    started = time.monotonic()
    data = simulate_impressions(
        sim, n, args.impressions or sim_cfg.impressions_per_customer, sim_cfg.channels,
        logging_policy=args.logging_policy or sim_cfg.logging_policy, seed=seed,
        epsilon=sim_cfg.epsilon, start=sim_cfg.start, days=sim_cfg.days,
    )
    data.save(args.out)
    logger.info("wrote %d impressions (%d customers, positive rate %.4f) to %s in %.1fs",
                len(data), n, float(data.y.mean()), args.out, time.monotonic() - started)
    if args.profiles:
        args.profiles.parent.mkdir(parents=True, exist_ok=True)
        with args.profiles.open("w", encoding="utf-8") as fh:
            for rec in sim.customers(n):
                fh.write(json.dumps(rec) + "\n")
        logger.info("wrote %d customer profiles to %s", n, args.profiles)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from training.dataset import Dataset
    from training.logs_dataset import load_logs
    from training.train import run_training

    cfg = load_config(args.config)
    if args.dask or args.scheduler:
        dask = cfg.dask.model_copy(update={"enabled": True,
                                           "scheduler": args.scheduler or cfg.dask.scheduler})
        cfg = cfg.model_copy(update={"dask": dask})
    schema, catalog = _load_inputs(cfg)
    started = time.monotonic()
    if args.scheduler and (args.dataset or args.logs):
        from training.dask_train import run_training_parquet

        result, path = run_training_parquet(cfg, schema, catalog, args.dataset or args.logs,
                                            args.out, overwrite=args.overwrite)
        dataset = None
    else:
        dataset = Dataset.load(args.dataset, schema) if args.dataset else (
            load_logs(args.logs, schema).dataset if args.logs else None)
        result, path = run_training(cfg, schema, catalog, args.out, dataset=dataset,
                                    overwrite=args.overwrite)
    m = result.metrics
    print(f"auc={m['auc']:.4f} logloss={m['logloss']:.4f} base_rate={m['base_rate']:.4f} "
          f"trees={m['best_iteration']} n_train={m['n_train']} n_valid={m['n_valid']}")
    print(f"artifact: {path} ({time.monotonic() - started:.1f}s)")
    if args.report:
        _train_report(args.report, path, dataset, schema, catalog, result, cfg)
    return 0


def _train_report(out: Path, artifact: Path, dataset: Any, schema: FeatureSchema, catalog: Any,
                  result: Any, cfg: TrainConfig) -> None:
    from nba_service.scoring.artifact import load_artifact
    from training.dask_train import valid_mask
    from training.evaluate import evaluate_model
    from training.report import write_report
    from training.train import build_dataset

    data = dataset if dataset is not None else build_dataset(cfg, schema, catalog)
    if len(result.valid_rows):
        rows = result.valid_rows
    else:  # the dask trainer holds out customers by hash
        rows = np.flatnonzero(valid_mask(data.customer_id, cfg.training.valid_fraction))
    held = data.subset(rows) if len(rows) else data
    model = load_artifact(artifact, schema)
    evaluation = evaluate_model(held, model.scorer.predict, schema, catalog, seed=cfg.seed)
    page = write_report(evaluation, out, title=f"Evaluation of {model.version}", info={
        "model_version": model.version, "rows (held-out customers)": len(held),
        "logging_policy": held.logging_policy, "catalog": str(getattr(catalog, "version", "")),
    })
    print_ope(evaluation)
    print(f"report: {page}")


def _cmd_export(args: argparse.Namespace) -> int:
    from training.dataset import Dataset
    from training.export import export_artifact, golden_inputs
    from training.train import auc, log_loss

    schema = FeatureSchema.from_yaml(args.schema)
    data = Dataset.load(args.dataset, schema)
    booster = lgb.Booster(model_file=str(args.model))
    p = np.asarray(booster.predict(data.x, num_threads=2), dtype=np.float64)
    metrics = {"auc": auc(data.y, p), "logloss": log_loss(data.y, p), "n_eval": len(data)}
    path = export_artifact(
        booster, schema, args.out, name=args.name,
        golden_x=golden_inputs(schema, data.x, args.golden_rows, args.seed),
        metrics=metrics, training_window=data.window, overwrite=args.overwrite,
    )
    print(f"auc={metrics['auc']:.4f} logloss={metrics['logloss']:.4f} on {len(data)} rows")
    print(f"artifact: {path}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from nba_service.scoring.artifact import load_artifact

    loaded = load_artifact(args.artifact, FeatureSchema.from_yaml(args.schema))
    m = loaded.manifest
    print(f"ok: {m.model_version} ({m.num_trees} trees, golden max diff "
          f"{loaded.golden_max_diff:.2g}, metrics {json.dumps(m.metrics)})")
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from nba_service.scoring.registry import publish

    version = publish(args.artifact, args.registry, FeatureSchema.from_yaml(args.schema),
                      slot=args.slot, make_current=not args.no_current)
    print(f"published {version} to {args.registry}/{args.slot}"
          + ("" if args.no_current else " (current)"))
    return 0


COMMANDS = {"simulate": _cmd_simulate, "train": _cmd_train, "export": _cmd_export,
            "verify": _cmd_verify, "publish": _cmd_publish, "evaluate": cmd_evaluate,
            "bandit": cmd_bandit, "loop": cmd_loop}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    from nba_service.engine.catalog import CatalogError
    from nba_service.scoring.artifact import ArtifactError
    from nba_service.scoring.registry import RegistryError
    from training.dataset import DatasetError

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, SchemaError, CatalogError, ArtifactError, RegistryError, DatasetError,
            FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
