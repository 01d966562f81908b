"""schemathesis fuzzes every documented route of a live gateway (real Redis and S3).

All of schemathesis's phases run (explicit examples, coverage, generated fuzzing, and
the stateful phase, which follows the document's OpenAPI links so ids from ``initiate``
and project creation reach the routes that need them), with every check: no 5xx, every
answer conforms to the document, schema-violating requests are refused and
schema-valid ones accepted (tests/fuzz_checks.py).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from api_support import ADMIN_TOKEN, build_app

from config import Settings
from devstack.servers import free_port
from storage.redis_client import RedisClient
from storage.s3_client import S3Client

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
#: Examples per operation and phase: enough to get past validation into the handlers.
MAX_EXAMPLES = 25
#: schemathesis stops generating after this (the suite's budget for this test).
MAX_TIME_S = 60


@pytest.fixture
async def live_gateway(
    redis: RedisClient, s3: S3Client, api_env: dict[str, str]
) -> AsyncIterator[str]:
    """A gateway serving on a free port; its base URL."""
    settings = Settings.from_env({
        **api_env,
        # Fuzzing is not abuse: the limits would turn most requests into 429s.
        "INITIATE_LIMIT_PER_WINDOW": "1000000",
        "PING_LIMIT_PER_WINDOW": "1000000",
        "UPLOAD_URL_LIMIT_PER_WINDOW": "1000000",
        # A confirm of an object never uploaded would look for it for a second each time.
        "UPLOAD_CONFIRM_WAIT_S": "0.05",
    })
    # Connections still open at the end are the fuzzer's: no grace period for them.
    runner = web.AppRunner(build_app(settings), shutdown_timeout=1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.test_timeout(240)
async def test_schemathesis_finds_nothing_over_every_route(
    live_gateway: str, tmp_path: Path
) -> None:
    schemathesis = Path(sys.executable).parent / "schemathesis"
    proc = await asyncio.create_subprocess_exec(
        str(schemathesis), "run", f"{live_gateway}/api/openapi.json",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--header", f"Authorization: Bearer {ADMIN_TOKEN}",
        "--max-examples", str(MAX_EXAMPLES), "--max-time", str(MAX_TIME_S),
        "--seed", "15", "--generation-database", "none", "--no-color",
        "--workers", "1", "--request-timeout", "20",
        "--report", "junit", "--report-dir", str(tmp_path),
        env={**os.environ, "SCHEMATHESIS_HOOKS": "fuzz_checks",
             "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])},
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    text = output.decode(errors="replace")
    (tmp_path / "schemathesis.txt").write_text(text)
    assert proc.returncode == 0, text[-20000:]
    # The phases and counts, for the record (pytest -s, or the log on a failure).
    print(text[text.find("Examples ("):text.find("Reports:")])
