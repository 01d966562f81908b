"""``echo-gateway``: dev | serve | worker | backlog | dlq | recover | project create | s3-cors | config.

Settings are parsed once here; a bad variable is reported by name and the
command exits with status 2 before anything starts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog
from aiohttp import web

from config import Settings, SettingsError
from gateway import cli_dlq, cli_recovery
from gateway.logging import configure_logging, configure_sentry
from gateway.runner import run_async, serve_app, supervise, wait_for_stop_signal
from storage.redis_client import open_redis

log = structlog.get_logger(__name__)

EXIT_CONFIG_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="echo-gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser(
        "dev", help="run everything in one process, with a private Redis and S3 if none is configured"
    )
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8080)
    dev.add_argument("--data-dir", type=Path, default=Path(".echo"))

    serve = commands.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)"
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)

    worker = commands.add_parser("worker", help="run consumer groups")
    worker.add_argument(
        "--group", action="append", dest="groups", default=[],
        help="consumer group to run (repeatable; default: all)",
    )
    worker.add_argument("--concurrency", type=int, default=None, help="handlers in flight per group")
    worker.add_argument("--metrics-host", default="0.0.0.0")
    worker.add_argument(
        "--metrics-port", type=int, default=9100, help="port of /metrics, /healthz, /readyz (0: none)"
    )

    backlog = commands.add_parser("backlog", help="one line per stream and consumer group")
    backlog.add_argument("--json", action="store_true")
    cli_dlq.add_parser(commands)

    project = commands.add_parser("project", help="manage projects")
    project_commands = project.add_subparsers(dest="project_command", required=True)
    create = project_commands.add_parser("create", help="create a project and print its id")
    create.add_argument("--name", required=True)
    create.add_argument("--language", default="en")
    create.add_argument(
        "--data-dir", type=Path, default=None,
        help="use the private Redis of a running `echo-gateway dev --data-dir DIR`",
    )

    commands.add_parser(
        "s3-cors", help="put CORS rules admitting CORS_ALLOW_ORIGINS on S3_BUCKET (browsers upload there)"
    )
    commands.add_parser("config", help="print the effective settings, secrets masked")
    cli_recovery.add_parser(commands)
    return parser


def _print_config(settings: Settings) -> int:
    rows = settings.describe()
    width = max(len(name) for name, _, _ in rows)
    for name, value, _doc in rows:
        print(f"{name.ljust(width)}  {value}")
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    if args.workers > 1:
        child = ["serve", "--host", args.host, "--port", str(args.port), "--workers", "1", "--reuse-port"]
        return supervise(child, args.workers, grace_s=settings.shutdown_grace_s)
    from gateway.app import create_app

    app = create_app(settings)
    return run_async(lambda: serve_app(
        app, host=args.host, port=args.port, reuse_port=args.reuse_port,
        shutdown_grace_s=settings.shutdown_grace_s,
    ))


def _dev(settings: Settings, args: argparse.Namespace) -> int:
    from devstack.stack import local_stack
    from gateway import first_run
    from gateway.app import create_app
    from gateway.appkeys import DEMO_PROJECT_ID
    from gateway.consumers import worker_background
    from gateway.lifecycle import llm_ctx
    from storage.s3_client import open_s3
    from storage.uploads import apply_bucket_cors

    async def main() -> int:
        async with local_stack(settings, args.data_dir) as effective:
            run = await first_run.prepare(effective, args.data_dir, host=args.host, port=args.port)
            effective = run.settings
            async with open_s3(effective) as s3:
                await apply_bucket_cors(
                    s3, bucket=effective.s3_bucket, origins=effective.cors_allow_origins
                )
            # create_app already runs the LLM service for the host routes.
            background = worker_background([], already=(llm_ctx,))
            app = create_app(effective, background=background)
            app[DEMO_PROJECT_ID] = run.demo_project_id
            text = first_run.announcement(run, host=args.host, port=args.port, data_dir=args.data_dir)
            return await serve_app(
                app, host=args.host, port=args.port, shutdown_grace_s=effective.shutdown_grace_s,
                on_started=lambda: print(text, flush=True),
            )

    return run_async(main)


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.app import create_worker_app
    from gateway.consumers import worker_background
    from gateway.groups import UnknownGroupError

    try:
        background = worker_background(args.groups, args.concurrency)
    except UnknownGroupError as exc:
        print(f"echo-gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    app = create_worker_app(settings, background=background)
    if args.metrics_port == 0:
        async def main() -> int:
            runner = web.AppRunner(app, shutdown_timeout=settings.shutdown_grace_s)
            await runner.setup()
            try:
                await wait_for_stop_signal()
            finally:
                await runner.cleanup()
            return 0

        return run_async(main)
    return run_async(lambda: serve_app(
        app, host=args.metrics_host, port=args.metrics_port,
        shutdown_grace_s=settings.shutdown_grace_s,
    ))


def _backlog(settings: Settings, args: argparse.Namespace) -> int:
    from events.catalogue import STREAMS
    from storage.redis_client import open_redis
    from streams.backlog import backlog_rows, format_rows
    from streams.names import StreamNames

    async def main() -> int:
        async with open_redis(settings) as redis:
            rows = await backlog_rows(
                redis, StreamNames(settings.redis_key_prefix), streams=list(STREAMS)
            )
        print(format_rows(rows, as_json=args.json))
        return 0

    return run_async(main)


def _project_create(settings: Settings, args: argparse.Namespace) -> int:
    from storage.conversations import ConversationStore

    async def main() -> int:
        async with open_redis(settings) as redis:
            store = ConversationStore(redis, key_prefix=settings.redis_key_prefix)
            project = await store.create_project({"name": args.name, "language": args.language})
        print(project["id"])
        return 0

    return run_async(main)


def _s3_cors(settings: Settings) -> int:
    from storage.uploads import apply_bucket_cors_from_settings

    async def main() -> int:
        if not await apply_bucket_cors_from_settings(settings):
            print("echo-gateway: CORS_ALLOW_ORIGINS is empty; nothing applied", file=sys.stderr)
            return 1
        print(f"CORS rules for {', '.join(settings.cors_allow_origins)} put on {settings.s3_bucket}")
        return 0

    return run_async(main)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"echo-gateway: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    configure_logging(settings)
    configure_sentry(settings)

    if args.command == "config":
        return _print_config(settings)
    if args.command == "dev":
        return _dev(settings, args)
    if args.command == "s3-cors":
        return _s3_cors(settings)
    if args.command == "project" and args.data_dir is not None:
        from devstack.stack import dev_redis_url

        url = dev_redis_url(args.data_dir)
        if url is None:
            print(f"echo-gateway: no private Redis of `dev` in {args.data_dir}", file=sys.stderr)
            return EXIT_CONFIG_ERROR
        settings = settings.replace(redis_url=url)
    if not (settings.redis_url or settings.redis_sentinels):
        print(
            "echo-gateway: configuration error: REDIS_URL: required "
            "(only `dev` starts a private Redis)",
            file=sys.stderr,
        )
        return EXIT_CONFIG_ERROR
    if args.command == "serve":
        return _serve(settings, args)
    if args.command == "worker":
        return _worker(settings, args)
    if args.command == "backlog":
        return _backlog(settings, args)
    if args.command == "dlq":
        return cli_dlq.run(settings, args)
    if args.command == "project" and args.project_command == "create":
        return _project_create(settings, args)
    if args.command == "recover":
        return cli_recovery.run(settings, args)
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
