"""`python -m training evaluate | bandit | loop`: offline evaluation and the closed loop."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from features.schema import FeatureSchema

__all__ = ["add_parsers", "cmd_bandit", "cmd_evaluate", "cmd_loop", "print_ope"]


def add_parsers(sub: Any) -> None:
    e = sub.add_parser(
        "evaluate", help="evaluation report of a model on logged data (metrics + OPE)",
        description="Score a dataset (or an `nba logs export` directory) with a model "
                    "artifact: AUC, log loss, calibration, gain/lift, and off-policy "
                    "evaluation (IPS, SNIPS, DM, DR with bootstrap intervals) of the engine "
                    "serving this model against the policy that logged the data. Writes "
                    "report.html, report.json and PNG plots to --out.")
    e.add_argument("--artifact", required=True, type=Path, help="model artifact directory")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", type=Path, help="Parquet dataset (Dataset.save layout)")
    src.add_argument("--logs", type=Path, help="`nba logs export` output directory")
    e.add_argument("--schema", required=True, type=Path, help="feature schema YAML")
    e.add_argument("--catalog", required=True, type=Path, help="action catalog YAML")
    e.add_argument("--out", required=True, type=Path, help="report directory")
    e.add_argument("--policy", choices=["engine", "greedy"], default="engine",
                   help="new policy: the engine's first action (default) or greedy P x V")
    e.add_argument("--bootstrap", type=int, default=400, help="bootstrap resamples")
    e.add_argument("--confidence", type=float, default=0.95, help="interval level")
    e.add_argument("--seed", type=int, default=7, help="bootstrap seed")

    b = sub.add_parser(
        "bandit", help="reward model + OPE on any logged-bandit-feedback table (CSV/Parquet)",
        description="Read a table of (context columns, chosen action, reward, logging "
                    "propensity), fit a LightGBM reward model on half of it and evaluate the "
                    "greedy policy on the other half with IPS, SNIPS, DM and DR. Expected "
                    "columns: docs/training.md.")
    b.add_argument("--table", required=True, type=Path, help="CSV, Parquet file or directory")
    b.add_argument("--preset", choices=["default", "obd"], default="default",
                   help="column names: default (action, reward, propensity) or obd "
                        "(item_id, click, propensity_score)")
    b.add_argument("--action-col", help="column of the chosen action")
    b.add_argument("--reward-col", help="column of the reward")
    b.add_argument("--propensity-col", help="column of the logging propensity")
    b.add_argument("--features", nargs="+", help="context columns (default: all others)")
    b.add_argument("--exclude", nargs="+", default=[], help="columns that are not features")
    b.add_argument("--out", required=True, type=Path, help="report directory")
    b.add_argument("--bootstrap", type=int, default=400, help="bootstrap resamples")
    b.add_argument("--seed", type=int, default=7, help="split, model and bootstrap seed")

    lp = sub.add_parser(
        "loop", help="closed loop: simulator vs a live service, retrained every round",
        description="Start a store and a service watching a model registry, then for each "
                    "round: simulated visits -> Decide (gRPC) -> simulated outcomes -> "
                    "RecordOutcome -> export (nba logs export) -> train -> publish -> wait "
                    "for the hot swap. Prints random / served / oracle values per round and "
                    "saves a plot.")
    lp.add_argument("--rounds", type=int, default=5, help="training rounds")
    lp.add_argument("--customers", type=int, default=10000, help="visiting customers")
    lp.add_argument("--eval-customers", type=int, default=1000, help="evaluation visits")
    lp.add_argument("--visits", type=int, default=3000, help="visits per round")
    lp.add_argument("--pilot", type=int, default=100,
                    help="random-logged visits the first model is trained on")
    lp.add_argument("--channels", nargs="+", default=["WEB", "CALL_CENTRE"],
                    help="channels the customers visit")
    lp.add_argument("--epsilon", type=float, default=0.1, help="exploration on those channels")
    lp.add_argument("--seed", type=int, default=7, help="simulator and loop seed")
    lp.add_argument("--features", type=Path, default=Path("examples/features.yaml"),
                    help="feature schema YAML")
    lp.add_argument("--catalog", type=Path, default=Path("examples/catalog.yaml"),
                    help="action catalog YAML (copied with exploration switched on)")
    lp.add_argument("--workdir", type=Path, help="keep store data, exports, models here "
                                                  "(default: a temporary directory)")
    lp.add_argument("--plot", type=Path, default=Path("var/closed_loop.png"),
                    help="where to save the plot")
    lp.add_argument("--json", type=Path, help="also write the per-round numbers as JSON")


def print_ope(evaluation: Any) -> None:
    m = evaluation.metrics
    print(f"model: auc={m.auc:.4f} logloss={m.logloss:.4f} base_rate={m.base_rate:.4f} "
          f"rows={m.n}")
    ope = evaluation.ope
    if ope is None:
        print("ope: no rows with a usable logged propensity")
        return
    print(f"logging policy (observed): {ope.logged.value:.4f} "
          f"[{ope.logged.lower:.4f}, {ope.logged.upper:.4f}]")
    for name, est in ope.estimates.items():
        print(f"new policy {name.upper():>5}: {est.value:.4f} [{est.lower:.4f}, "
              f"{est.upper:.4f}]")
    d = ope.diagnostics
    print(f"effective sample size {d.ess:.1f} of {d.n} ({d.ess_fraction:.1%}), "
          f"min propensity {d.min_propensity:.3g}")
    for w in d.warnings:
        print(f"WARNING: {w}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from nba_service.engine.catalog import load_catalog
    from nba_service.scoring.artifact import load_artifact
    from training.dataset import Dataset
    from training.evaluate import evaluate_model
    from training.logs_dataset import load_logs
    from training.report import write_report

    schema = FeatureSchema.from_yaml(args.schema)
    catalog = load_catalog(args.catalog, schema)
    model = load_artifact(args.artifact, schema)
    data = Dataset.load(args.dataset, schema) if args.dataset else \
        load_logs(args.logs, schema).dataset
    evaluation = evaluate_model(data, model.scorer.predict, schema, catalog, policy=args.policy,
                                n_bootstrap=args.bootstrap, seed=args.seed,
                                confidence=args.confidence)
    page = write_report(evaluation, args.out, title=f"Evaluation of {model.version}", info={
        "model_version": model.version, "data": str(args.dataset or args.logs),
        "rows": len(data), "logging_policy": data.logging_policy,
        "window": f"{data.window[0]} .. {data.window[1]}", "catalog": catalog.version,
    })
    print_ope(evaluation)
    print(f"report: {page}")
    return 0


def cmd_bandit(args: argparse.Namespace) -> int:
    from training.bandit_dataset import load_bandit_table
    from training.bandit_eval import evaluate_bandit_table
    from training.report import write_report

    table = load_bandit_table(
        args.table, preset=args.preset, action_col=args.action_col, reward_col=args.reward_col,
        propensity_col=args.propensity_col, features=args.features, exclude=args.exclude,
    )
    evaluation, model, rows = evaluate_bandit_table(table, seed=args.seed,
                                                    n_bootstrap=args.bootstrap)
    page = write_report(evaluation, args.out, title=f"Logged bandit feedback: {args.table.name}",
                        info={"table": str(args.table), "rows": len(table),
                              "actions": len(table.action_ids),
                              "features": len(table.feature_names),
                              "evaluation rows": len(rows),
                              "reward": "binary" if model.binary else "real"})
    (args.out / "reward_model.txt").write_text(model.booster.model_to_string(), encoding="utf-8")
    print_ope(evaluation)
    print(f"report: {page}")
    print(json.dumps({"actions": table.action_ids[:10], "features": table.feature_names[:10]}))
    return 0


def cmd_loop(args: argparse.Namespace) -> int:
    import asyncio
    import tempfile

    from training.closed_loop import LoopConfig
    from training.loop_service import format_table, run_loop

    cfg = LoopConfig(channels=tuple(args.channels), customers=args.customers,
                     eval_customers=args.eval_customers, visits_per_round=args.visits,
                     rounds=args.rounds, pilot_customers=args.pilot, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="nba-loop-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = asyncio.run(run_loop(cfg, workdir, features=args.features,
                                       catalog=args.catalog, epsilon=args.epsilon,
                                       plot_path=args.plot))
    print()
    print(format_table(results))
    last = results[-1]
    print(f"served policy: {last.current:.2f} per decision = {last.share_of_oracle:.1%} of the "
          f"oracle ({last.oracle:.2f}), {last.current / last.oracle_rules:.1%} of the oracle "
          f"under the catalog's rules ({last.oracle_rules:.2f}); random {last.random:.2f}")
    print(f"plot: {args.plot}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n",
                             encoding="utf-8")
    return 0
