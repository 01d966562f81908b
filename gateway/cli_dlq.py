"""``echo-gateway dlq``: list, replay or drop dead letters (``streams.deadletters``).

    echo-gateway dlq list [--stream S] [--count N] [--after ID] [--json]
    echo-gateway dlq replay STREAM ID
    echo-gateway dlq drop STREAM ID

``list`` prints the oldest ``--count`` letters of each stream (all streams unless
``--stream``); the line after a full page names the ``--after`` cursor of the next one.
Exit status: 0 done, 1 no such letter (or not replayable), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from config import Settings
from events.catalogue import STREAMS
from gateway.runner import run_async
from storage.redis_client import open_redis
from streams.deadletters import MAX_PAGE, DeadLetter, DeadLetterNotReplayable, DeadLetters
from streams.names import StreamNames

EXIT_NOT_FOUND = 1
REASON_CHARS = 80


def add_parser(commands: Any) -> None:
    """Register ``dlq`` on the ``echo-gateway`` sub-command parser."""
    dlq = commands.add_parser("dlq", help="list, replay or drop dead letters")
    actions = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = actions.add_parser("list", help="dead letters, oldest first")
    listing.add_argument("--stream", choices=STREAMS, help="one stream (default: every stream)")
    listing.add_argument("--count", type=int, default=50, help=f"per stream, 1 to {MAX_PAGE}")
    listing.add_argument("--after", default="", help="the letter id a previous page ended at")
    listing.add_argument("--json", action="store_true")
    for name, text in (("replay", "re-publish the event and remove the letter, atomically"),
                       ("drop", "remove the letter")):
        action = actions.add_parser(name, help=text)
        action.add_argument("stream", choices=STREAMS)
        action.add_argument("id", help="the dead letter's id (as `dlq list` shows it)")


def _table(letters: list[DeadLetter]) -> str:
    header = ("stream", "id", "original_id", "type", "attempts", "deliveries", "dead_at", "reason")
    lines = [header] + [(
        d.stream, d.id, d.original_id, d.type, str(d.attempts), str(d.deliveries),
        datetime.fromtimestamp(d.dead_at_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        d.reason if len(d.reason) <= REASON_CHARS else d.reason[:REASON_CHARS - 3] + "...",
    ) for d in letters]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines
    )


async def _list(dead: DeadLetters, args: argparse.Namespace) -> int:
    letters: list[DeadLetter] = []
    more: dict[str, str] = {}
    for stream in [args.stream] if args.stream else STREAMS:
        page = await dead.list(stream, after=args.after, count=args.count)
        letters += page.letters
        if page.next_after:
            more[stream] = page.next_after
    if args.json:
        print(json.dumps({"dead_letters": [d.as_dict() for d in letters], "next_after": more},
                         indent=2))
        return 0
    print(_table(letters))
    for stream, after in more.items():
        print(f"more in {stream}: echo-gateway dlq list --stream {stream} --after {after}")
    return 0


async def _act(dead: DeadLetters, args: argparse.Namespace) -> int:
    if args.dlq_command == "drop":
        if await dead.drop(args.stream, args.id):
            print(f"dropped {args.stream} {args.id}")
            return 0
    else:
        try:
            entry_id = await dead.replay(args.stream, args.id)
        except DeadLetterNotReplayable as exc:
            print(f"echo-gateway: {exc}", file=sys.stderr)
            return EXIT_NOT_FOUND
        if entry_id is not None:
            print(f"replayed {args.stream} {args.id} as {entry_id}")
            return 0
    print(f"echo-gateway: no dead letter {args.id} in {args.stream}", file=sys.stderr)
    return EXIT_NOT_FOUND


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``echo-gateway dlq ...`` against the configured Redis."""

    async def main() -> int:
        async with open_redis(settings) as redis:
            dead = DeadLetters(redis, StreamNames(settings.redis_key_prefix),
                               max_len=settings.stream_max_len)
            if args.dlq_command == "list":
                try:
                    return await _list(dead, args)
                except ValueError as exc:
                    print(f"echo-gateway: {exc}", file=sys.stderr)
                    return 2
            return await _act(dead, args)

    return run_async(main)
