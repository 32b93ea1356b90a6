"""`nba` command line: serve, demo, decide, features load."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from nba_service.security.commands import add_security_commands
from nba_service.settings import Settings, load_settings

log = logging.getLogger("nba")


def setup_service_logging(settings: Settings) -> None:
    """Text or JSON lines, customer ids pseudonymised, secrets redacted (docs/operations.md)."""
    from nba_service.observability.logs import setup_logging
    from nba_service.security.pseudonym import Pseudonymizer

    key = settings.pseudonym_key.get_secret_value().encode() if settings.pseudonym_key else None
    setup_logging(settings.log_level, settings.log_format, Pseudonymizer(key))


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


async def run_server(settings: Settings) -> None:
    from nba_service.runtime import Runtime
    from nba_service.server import NbaServer

    server = NbaServer(settings, Runtime(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    if not server.runtime.ready():
        log.warning("not ready (health NOT_SERVING): %s", server.runtime.details())
    await stop.wait()
    await server.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings(
        host=args.host,
        port=args.port,
        http_port=args.http_port,
        redis_url=args.redis_url,
        model_path=args.model,
        model_registry=args.registry,
        catalog=args.catalog,
        feature_schema=args.features,
        workers=args.workers,
    )
    setup_service_logging(settings)
    if settings.workers != 1:
        from nba_service.workers import Supervisor

        try:
            return Supervisor(settings, settings.workers).run()
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    asyncio.run(run_server(settings))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from nba_service.demo import run_demo

    _setup_logging("WARNING" if not args.verbose else "INFO")
    return asyncio.run(run_demo(args))


def cmd_decide(args: argparse.Namespace) -> int:
    import grpc

    from nba_service.client import decide_once, format_decision, parse_context

    try:
        context = parse_context(args.context)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        resp = decide_once(
            args.target,
            args.customer_id,
            args.channel,
            args.placement,
            context,
            args.limit,
            args.explain,
            timeout=args.timeout,
        )
    except (grpc.RpcError, OSError) as exc:
        if isinstance(exc, grpc.RpcError):
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        else:
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(format_decision(args.customer_id, args.channel, resp))
    return 0


def cmd_features_load(args: argparse.Namespace) -> int:
    import redis

    from features.schema import FeatureSchema
    from nba_service.store.loader import load_file

    settings = load_settings(redis_url=args.redis_url, feature_schema=args.features)
    _setup_logging(settings.log_level)
    if not settings.redis_url:
        print("error: set NBA_REDIS_URL or --redis-url (the server to load into)", file=sys.stderr)
        return 2
    schema = FeatureSchema.from_yaml(settings.feature_schema)
    client = redis.Redis.from_url(settings.redis_url)
    report = load_file(
        args.file,
        client,
        schema,
        batch_size=args.batch_size,
        id_column=args.id_column,
        reject_report=args.rejects,
    )
    print(report.summary() if hasattr(report, "summary") else report)
    return 0 if report.loaded or not report.rejected else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nba", description="Real-time next-best-action decisioning service."
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the gRPC service")
    s.add_argument("--host", help="bind address (default 127.0.0.1, env NBA_HOST)")
    s.add_argument("--port", type=int, help="gRPC port (default 50051, env NBA_PORT)")
    s.add_argument(
        "--http-port", type=int,
        help="HTTP/JSON gateway, demo page and inspector (default 8080, env NBA_HTTP_PORT; "
             "0 = a free port, -1 = off)",
    )
    s.add_argument("--redis-url", help="online store URL; unset: start an embedded server")
    s.add_argument("--model", type=Path, help="model artifact directory to serve")
    s.add_argument("--registry", type=Path, help="model registry directory to serve from")
    s.add_argument("--catalog", type=Path, help="action catalog YAML")
    s.add_argument("--features", type=Path, help="feature schema YAML")
    s.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port; 0 = one per core (default 1, env NBA_WORKERS)",
    )
    s.set_defaults(func=cmd_serve)

    d = sub.add_parser(
        "demo",
        help="from nothing to ranked recommendations: data, model, store, server, client",
    )
    d.add_argument("--customers", type=int, default=2000, help="synthetic customers to create")
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--workdir", type=Path, help="keep data and model here (default: temp dir)")
    d.add_argument("--port", type=int, default=0, help="gRPC port (default: a free one)")
    d.add_argument("--keep-serving", action="store_true", help="keep the server up afterwards")
    d.add_argument("-v", "--verbose", action="store_true")
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser("decide", help="ask a running server for one decision")
    c.add_argument("customer_id")
    c.add_argument("--channel", default="WEB", help="WEB, MOBILE_APP, CALL_CENTRE, CHAT, ...")
    c.add_argument("--placement", default="")
    c.add_argument(
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="request context entry (repeatable); numbers and true/false are typed",
    )
    c.add_argument("--limit", type=int, default=0)
    c.add_argument("--explain", action="store_true", help="show every candidate's fate")
    c.add_argument("--target", default="127.0.0.1:50051", help="server host:port")
    c.add_argument("--timeout", type=float, default=2.0, help="deadline in seconds")
    c.set_defaults(func=cmd_decide)

    add_security_commands(sub)

    sub.add_parser(
        "bench",
        help="benchmark Decide against the machine's floor (loadtests/bench.py; see --help)",
        add_help=False,
    )

    f = sub.add_parser("features", help="feature store operations")
    fsub = f.add_subparsers(dest="features_command", required=True)
    fl = fsub.add_parser("load", help="load a Parquet or CSV file of customer features")
    fl.add_argument("file", type=Path)
    fl.add_argument("--redis-url", help="target server (env NBA_REDIS_URL)")
    fl.add_argument("--features", type=Path, help="feature schema YAML")
    fl.add_argument("--id-column", default="customer_id")
    fl.add_argument("--batch-size", type=int, default=5000)
    fl.add_argument("--rejects", type=Path, help="CSV report of rejected rows and why")
    fl.set_defaults(func=cmd_features_load)

    from nba_service.logs.commands import add_closed_loop_parsers

    add_closed_loop_parsers(sub)  # logs export, report, batch decide
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Its options belong to loadtests/bench.py (`nba bench --help` lists them).
        from nba_service.bench_cli import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
