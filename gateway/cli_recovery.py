"""``echo-gateway recover --conversation ID | --stuck [--dry-run]``: the sweeper by hand.

``--conversation ID`` re-drives one conversation now (idempotent); ``--stuck`` runs a sweep
now unless one is running (exit 1 then), or with ``--dry-run`` prints what one would find.
Each prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from config import Settings
from gateway.runner import run_async

EXIT_NOT_FOUND = 1


def add_parser(commands: Any) -> None:
    """Add ``recover`` to the CLI's subcommands."""
    recover = commands.add_parser("recover", help="re-drive stuck work (the stuck-work sweeper by hand)")
    target = recover.add_mutually_exclusive_group(required=True)
    target.add_argument("--conversation", metavar="ID", help="re-drive one conversation now")
    target.add_argument("--stuck", action="store_true", help="sweep for stuck work now")
    recover.add_argument(
        "--dry-run", action="store_true", help="with --stuck: report only, change nothing"
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from gateway.wiring import publisher_for
    from recovery.alerts import RecoveryMetrics
    from recovery.sweeper import StuckSweeper
    from storage.conversations import ConversationNotFound, ConversationStore
    from storage.redis_client import open_redis
    from storage.s3_client import open_s3
    from storage.sweep_lease import SweepLease
    from streams.runtime import default_consumer_name

    if args.dry_run and not args.stuck:
        print("echo-gateway: --dry-run goes with --stuck", file=sys.stderr)
        return 2

    async def main() -> int:
        async with open_redis(settings) as redis, open_s3(settings) as s3:
            prefix = settings.redis_key_prefix
            sweeper = StuckSweeper(
                store=ConversationStore(redis, key_prefix=prefix), s3=s3,
                publisher=publisher_for(redis, settings),
                lease=SweepLease(redis, key_prefix=prefix), settings=settings,
                metrics=RecoveryMetrics(CollectorRegistry()),
                owner=f"cli-{default_consumer_name()}",
            )
            if args.conversation:
                try:
                    result: dict[str, Any] = await sweeper.recover_conversation(args.conversation)
                except ConversationNotFound:
                    print(f"echo-gateway: no conversation {args.conversation}", file=sys.stderr)
                    return EXIT_NOT_FOUND
            elif args.dry_run:
                result = (await sweeper.dry_run()).as_dict()
            else:
                report = await sweeper.run_now()
                if report is None:
                    print("echo-gateway: a sweep is running now; try again later", file=sys.stderr)
                    return 1
                result = report.as_dict()
        print(json.dumps(result, indent=2))
        return 0

    return run_async(main)
