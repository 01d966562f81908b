"""``echo-gateway dlq list | replay | drop`` against the session's Redis, as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from streams_support import make_dead_letters, read_stream

from storage.redis_client import RedisClient
from streams.config import StreamsConfig
from streams.names import StreamNames
from streams.publisher import Publisher


async def dlq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gateway.cli", "dlq", *args], check=False,
        env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, timeout=60,
    )


async def test_dlq_lists_replays_and_drops_letters_and_says_when_there_is_none(
    r: RedisClient, base_env: dict[str, str], streams_config: StreamsConfig, names: StreamNames,
    publisher: Publisher,
) -> None:
    ids = await make_dead_letters(r, streams_config, publisher, "llm", 2)
    listed = await dlq(base_env, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    letters = json.loads(listed.stdout)["dead_letters"]
    assert sorted(d["original_id"] for d in letters) == sorted(ids)
    replayed, dropped = (d["id"] for d in letters)

    table = await dlq(base_env, "list", "--stream", "llm", "--count", "1")
    assert table.returncode == 0, table.stderr
    assert replayed in table.stdout and dropped not in table.stdout
    assert f"--stream llm --after {replayed}" in table.stdout

    done = await dlq(base_env, "replay", "llm", replayed)
    assert done.returncode == 0, done.stderr
    new_id = done.stdout.split()[-1]
    assert [e[0] for e in await read_stream(r, names.stream("llm"))][-1] == new_id
    assert (await dlq(base_env, "replay", "llm", replayed)).returncode == 1

    assert (await dlq(base_env, "drop", "llm", dropped)).returncode == 0
    gone = await dlq(base_env, "drop", "llm", dropped)
    assert gone.returncode == 1 and "no dead letter" in gone.stderr
    empty = await dlq(base_env, "list", "--json")
    assert json.loads(empty.stdout) == {"dead_letters": [], "next_after": {}}
    assert (await dlq(base_env, "list", "--stream", "orders")).returncode == 2
