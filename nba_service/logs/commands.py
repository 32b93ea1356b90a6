"""Sub-commands of `nba` for the closed loop: `logs export`, `report`, `batch decide`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from nba_service.settings import load_settings

__all__ = ["add_closed_loop_parsers"]


def cmd_logs_export(args: argparse.Namespace) -> int:
    import redis

    from features.schema import FeatureSchema
    from nba_service.engine.catalog import load_catalog
    from nba_service.logs.export import Exporter, ExportError

    settings = load_settings(redis_url=args.redis_url, feature_schema=args.features,
                             catalog=args.catalog)
    if not settings.redis_url:
        print("error: set NBA_REDIS_URL or --redis-url (the store holding the logs)",
              file=sys.stderr)
        return 2
    schema = FeatureSchema.from_yaml(settings.feature_schema)
    catalog = load_catalog(settings.catalog, schema)
    client = redis.Redis.from_url(settings.redis_url)
    exporter = Exporter(
        client, args.out, schema, catalog, group=args.group, batch_size=args.batch_size,
        settle_s=args.settle, progress=not args.no_progress,
        fail_after_batches=args.fail_after_batches,
    )
    try:
        report = exporter.run()
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nba_service.report import ReportError, build_report

    try:
        result = build_report(args.data, args.out, confidence=args.confidence)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.text)
    print(f"\nHTML report: {result.html}")
    return 0


def cmd_batch_decide(args: argparse.Namespace) -> int:
    from nba_service.batch import BatchError, run_batch_cli

    try:
        return run_batch_cli(args)
    except BatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def add_closed_loop_parsers(sub: Any) -> None:
    lg = sub.add_parser("logs", help="decision and outcome logs")
    lsub = lg.add_subparsers(dest="logs_command", required=True)
    ex = lsub.add_parser(
        "export",
        help="join decisions with outcomes into partitioned Parquet (exactly once, resumable)",
        description="Reads the decision and outcome streams through a consumer group and "
                    "writes DIR/impressions, DIR/decisions and DIR/outcomes (docs/closed-loop.md)."
                    " Decisions whose response window is still open are held back until a "
                    "later run.",
    )
    ex.add_argument("--out", type=Path, required=True, help="output directory")
    ex.add_argument("--redis-url", help="the store holding the logs (env NBA_REDIS_URL)")
    ex.add_argument("--features", type=Path, help="feature schema YAML (column names)")
    ex.add_argument("--catalog", type=Path, help="action catalog YAML (outcome weights)")
    ex.add_argument("--group", default="export",
                    help="consumer group; one per output directory (default: export)")
    ex.add_argument("--batch-size", type=int, default=5000, help="stream entries per file")
    ex.add_argument("--settle", type=float, default=60.0,
                    help="seconds after a response window closes before its rows are final")
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")
    # Crash-recovery tests: exit after N batches are written, before they are acknowledged.
    ex.add_argument("--fail-after-batches", type=int, help=argparse.SUPPRESS)
    ex.set_defaults(func=cmd_logs_export)

    rp = sub.add_parser(
        "report",
        help="per action and channel: impressions, response rates, value, lift vs control",
        description="Reads an export directory (nba logs export) and writes DIR/report.html "
                    "with PNG plots; prints the table on stdout.",
    )
    rp.add_argument("--data", type=Path, required=True, help="export directory to summarise")
    rp.add_argument("--out", type=Path, required=True, help="where report.html and PNGs go")
    rp.add_argument("--confidence", type=float, default=0.95, help="confidence level of CIs")
    rp.set_defaults(func=cmd_report)

    bt = sub.add_parser("batch", help="outbound / batch decisioning")
    bsub = bt.add_subparsers(dest="batch_command", required=True)
    bd = bsub.add_parser(
        "decide",
        help="decide for every customer of a list (Parquet/CSV) and write ranked results",
        description="Runs the service's Decider in process (same catalog, model, contact "
                    "policies, budgets and decision log) over a customer list in chunks.",
    )
    bd.add_argument("file", type=Path, help="Parquet or CSV with a customer id column")
    bd.add_argument("--channel", required=True, help="EMAIL, SMS, WEB, ...")
    bd.add_argument("--placement", default="")
    bd.add_argument("--out", type=Path, required=True, help="results Parquet file")
    bd.add_argument("--id-column", default="customer_id")
    bd.add_argument("--limit", type=int, default=1, help="actions per customer")
    bd.add_argument("--chunk", type=int, default=2000, help="customers per chunk")
    bd.add_argument("--redis-url", help="online store (env NBA_REDIS_URL)")
    bd.add_argument("--model", type=Path, help="model artifact directory")
    bd.add_argument("--registry", type=Path, help="model registry directory")
    bd.add_argument("--catalog", type=Path, help="action catalog YAML")
    bd.add_argument("--features", type=Path, help="feature schema YAML")
    bd.add_argument("--concurrency", type=int, default=64,
                    help="decisions in flight at once (their store round trips overlap)")
    bd.add_argument("--store-timeout", type=float, default=5.0,
                    help="store socket timeout in seconds (a batch can wait longer than an API "
                         "call; a timed-out customer gets the fallback set, flagged degraded)")
    bd.add_argument("--no-log", action="store_true",
                    help="do not append the decisions to the decision log")
    bd.add_argument("--no-progress", action="store_true", help="no progress bar")
    bd.set_defaults(func=cmd_batch_decide)
