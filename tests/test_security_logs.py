"""No log line carries a secret: not the host token (right or wrong), not the S3 or API
keys, not a presigned signature.

A full run on real processes (``echo-gateway serve --workers 2`` and one ``echo-gateway
worker`` from ``tests/fault_stack.py``, at ``LOG_LEVEL=debug``, JSON lines), driven the way
the portal and a host do: project created and read, conversation initiated, the S3 probe,
chunks through presigned POSTs (one confirmed before its upload, so the background
verification runs), a text chunk, a legacy upload, a ping, finish, finalization with a
summary, auto-select; and requests with a wrong token, a token in the wrong scheme, bad
input, and a Redis crash (the error paths log). Then every line the processes wrote, and
``echo-gateway config``, are searched.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from fault_stack import ADMIN_TOKEN, LLM_KEY, ROOT, SPEECH_KEY, FaultStack
from portal_client import WEBM_HEADER
from waiting import wait_until

from devstack.servers import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.test_timeout(300)]

WRONG_TOKEN = "wrong-host-token-5f1d2c9e7a"
REDIS_PASSWORD = "redis-password-8c41e0b2"
HOST = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
P = "/api/participant"


class DebugLoggingStack(FaultStack):
    """The fault-injection system, every process logging at debug level, Redis with a
    password (in ``REDIS_URL``, where a careless error message would show it)."""

    def __init__(self, root: Path, **kw: Any) -> None:
        super().__init__(root, **kw)
        self.redis = RedisServer(root / "redis", persistent=True,
                                 extra_args=("--appendfsync", "always",
                                             "--requirepass", REDIS_PASSWORD))

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "LOG_LEVEL": "debug", "UPLOAD_CONFIRM_WAIT_S": "0.2",
                "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{self.redis.port}/0"}

    @property
    def log_dir(self) -> Path:
        return self._logs


class Flow:
    """Requests against the stack, keeping every secret it was handed."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self.http = http
        self.base = base_url
        self.signatures: list[str] = []
        self.ids: list[str] = []

    async def call(self, method: str, path: str, *, expect: int = 200, **kw: Any) -> Any:
        async with self.http.request(method, self.base + path, **kw) as resp:
            body = await resp.read()
            assert resp.status == expect, (method, path, resp.status, body[:300])
            return await resp.json() if body else None

    async def upload(self, cid: str, *, confirm_first: bool = False) -> None:
        grant = await self.call("POST", f"{P}/conversations/{cid}/get-upload-url",
                                json={"filename": "rec.webm", "content_type": "audio/webm"})
        self.signatures.append(grant["fields"]["x-amz-signature"])
        confirm = {"chunk_id": grant["chunk_id"], "file_url": grant["file_url"],
                   "timestamp": f"2026-01-01T10:00:0{len(self.signatures)}Z"}
        if confirm_first:
            await self.call("POST", f"{P}/conversations/{cid}/confirm-upload", json=confirm,
                            expect=202)
        form = aiohttp.FormData()
        for name, value in grant["fields"].items():
            form.add_field(name, value)
        form.add_field("file", WEBM_HEADER + b"speech", filename="rec.webm",
                       content_type="audio/webm")
        async with self.http.post(grant["upload_url"], data=form) as resp:
            assert resp.status == 204
        if not confirm_first:
            await self.call("POST", f"{P}/conversations/{cid}/confirm-upload", json=confirm)


async def _redis_outage(flow: Flow, stack: DebugLoggingStack, pid: str) -> None:
    """Redis crashes and comes back: the error paths log (503s while it is away)."""
    stack.crash_redis()
    await flow.call("GET", f"{P}/projects/{pid}", expect=503)
    await stack.start_redis()

    async def answers() -> bool:
        async with flow.http.get(f"{flow.base}{P}/projects/{pid}") as resp:
            return resp.status == 200

    await wait_until(answers, timeout_s=30, interval_s=0.2, message="no recovery from Redis")


async def _run_flow(flow: Flow, stack: DebugLoggingStack) -> None:
    project = await flow.call("POST", "/api/host/projects", headers=HOST, expect=201,
                              json={"name": "Logs", "language": "en"})
    pid = project["id"]
    await flow.call("PATCH", f"/api/host/projects/{pid}", headers=HOST, json={"name": "Logs 2"})
    await flow.call("GET", f"{P}/projects/{pid}")
    conversation = await flow.call("POST", f"{P}/projects/{pid}/conversations/initiate",
                                   json={"name": "Alice", "email": "alice@example.org"})
    cid = conversation["id"]
    flow.ids += [pid, cid]
    probe = await flow.call("POST", f"{P}/conversations/{cid}/check-s3")
    flow.signatures += parse_qs(urlsplit(probe["probe_url"]).query)["X-Amz-Signature"]
    async with flow.http.put(probe["probe_url"], data=b"probe",
                             headers={"Content-Type": "text/plain"}) as resp:
        assert resp.status == 200
    await flow.upload(cid)
    await flow.upload(cid, confirm_first=True)
    await flow.call("POST", f"{P}/conversations/{cid}/upload-text",
                    json={"timestamp": "2026-01-01T10:01:00Z", "content": "by text"})
    form = aiohttp.FormData()
    form.add_field("chunk", WEBM_HEADER + b"legacy", filename="l.webm", content_type="audio/webm")
    await flow.call("POST", f"{P}/conversations/{cid}/upload-chunk", data=form)
    await flow.call("POST", f"{P}/conversations/{cid}/ping", json={"state": "recording"})
    await flow.call("POST", f"{P}/conversations/{cid}/finish")

    async def summary() -> Any:
        doc = await flow.call("GET", f"/api/host/conversations/{cid}", headers=HOST)
        return doc.get("summary")

    await wait_until(summary, timeout_s=120, interval_s=0.5,
                     message="the conversation was never finalized and summarized")
    job = await flow.call("POST", f"/api/projects/{pid}/auto-select", headers=HOST, expect=202,
                          json={"query": "parks"})

    async def job_done() -> bool:
        view = await flow.call("GET", f"/api/jobs/{job['job_id']}", headers=HOST)
        return view["status"] in ("done", "failed", "completed")

    await wait_until(job_done, timeout_s=60, interval_s=0.5, message="auto-select never ended")
    await flow.call("GET", "/api/host/projects", headers=HOST)
    await flow.call("GET", f"/api/host/projects/{pid}/conversations", headers=HOST)
    await _redis_outage(flow, stack, pid)
    # Refusals: a wrong token, the token in the wrong scheme, bad input, an unknown id.
    await flow.call("GET", f"/api/host/projects/{pid}", expect=401,
                    headers={"Authorization": f"Bearer {WRONG_TOKEN}"})
    await flow.call("GET", "/api/host/projects", expect=401,
                    headers={"Authorization": f"Basic {ADMIN_TOKEN}"})
    await flow.call("POST", f"{P}/conversations/{cid}/get-upload-url", expect=400,
                    json={"filename": "x", "content_type": "text/html"})
    await flow.call("GET", f"/api/host/conversations/{pid}", headers=HOST, expect=404)


async def test_no_log_line_of_a_full_run_carries_a_secret(tmp_path: Path) -> None:
    stack = DebugLoggingStack(tmp_path, speech=lambda audio: "we should plant trees")
    async with stack:
        stack.start_worker()
        await stack.wait_for_workers()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            flow = Flow(http, stack.base_url)
            await _run_flow(flow, stack)
        secrets = {
            "the host token": ADMIN_TOKEN, "a wrong host token": WRONG_TOKEN,
            "the S3 secret key": stack.s3.secret_key, "the speech API key": SPEECH_KEY,
            "the Anthropic API key": LLM_KEY, "the Redis password": REDIS_PASSWORD,
            **{f"presigned signature {i}": s for i, s in enumerate(flow.signatures)},
        }
        env = stack.env
    # (the stack's exit stopped the processes: their last lines are in)
    config = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "config", cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    config_output, _ = await config.communicate()
    assert config.returncode == 0, config_output
    texts = {path.name: path.read_text(errors="replace") for path in stack.log_dir.iterdir()}
    texts["echo-gateway config"] = config_output.decode()
    lines = [(name, line) for name, text in texts.items() for line in text.splitlines()]

    # The logs are those of the run (the test cannot pass on empty files).
    assert len(flow.signatures) == 3 and len(lines) > 20, texts.keys()
    everything = "\n".join(line for _, line in lines)
    assert any(i in everything for i in flow.ids), "the run's ids appear nowhere in the logs"
    assert '"redis_unavailable"' in texts["gateway.log"], "the outage left no line"
    for what, secret in secrets.items():
        assert len(secret) >= 8
        pattern = re.compile(re.escape(secret), re.IGNORECASE)
        leaks = [f"{name}: {line[:300]}" for name, line in lines if pattern.search(line)]
        assert not leaks, f"{what} is in the logs:\n" + "\n".join(leaks[:5])

