"""The soak benchmark's stack and driver helpers (bench/soak.py runs on them).

:class:`Stack` starts a private Redis and SeaweedFS and an OpenAI-compatible speech
emulator, then ``echo-gateway serve`` and ``worker`` processes on them; ``rss_mib`` reads a
process's resident memory; ``wait_ok``, ``until``, ``bounded`` and ``call`` wait for an
endpoint, poll a condition, bound a fan-out and make a checked JSON call.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from emulators.openai_audio import OpenAIAudioEmulator

from config import Settings
from devstack.servers import RedisServer, SeaweedServer, free_port
from storage.s3_client import ensure_bucket, open_s3

ADMIN_TOKEN = "soak-admin-token"
BUCKET = "soak-audio"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class Stack:
    """Private Redis and S3, the speech emulator, and the processes started on them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.redis = RedisServer(root / "redis")
        self.s3 = SeaweedServer(root / "s3")
        self.speech = OpenAIAudioEmulator(api_key="sk-soak", responder=lambda _: "words")
        self.procs: list[subprocess.Popen[bytes]] = []

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
            "REDIS_URL": self.redis.url, "S3_ENDPOINT_URL": self.s3.endpoint_url,
            "S3_BUCKET": BUCKET, "AWS_ACCESS_KEY_ID": self.s3.access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3.secret_key, "ADMIN_TOKEN": ADMIN_TOKEN,
            "TRANSCRIBER": "openai", "TRANSCRIBER_URL": self.speech.base_url,
            "TRANSCRIBER_API_KEY": "sk-soak", "LOG_LEVEL": "warning", "LOG_FORMAT": "json",
            "INITIATE_LIMIT_PER_WINDOW": "1000000", "UPLOAD_CONFIRM_WAIT_S": "0.3",
            # More handlers in flight per group than the default 8: the worker's phase is
            # then bound by the machine, not by S3's round trips.
            "STREAM_CONCURRENCY": "32",
            **extra,
        }

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env())

    async def start(self, stack: AsyncExitStack) -> None:
        await stack.enter_async_context(self.redis)
        await stack.enter_async_context(self.s3)
        await self.speech.start()
        stack.push_async_callback(self.speech.close)
        stack.push_async_callback(self.stop_all)
        async with open_s3(self.settings) as s3:
            await ensure_bucket(s3, BUCKET)

    def spawn(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        with (self.root / log).open("ab") as out:
            # Started between measurements, never while one runs.
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, env=self.env(),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    async def serve(self) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        proc = self.spawn("serve", "--host", "127.0.0.1", "--port", str(port), log="gateway.log")
        base = f"http://127.0.0.1:{port}"
        await wait_ok(base + "/healthz", proc)
        return base, proc

    async def worker(self, *groups: str) -> tuple[str, subprocess.Popen[bytes]]:
        """A worker of ``groups`` (every group if none)."""
        port = free_port()
        args = ["worker", "--metrics-host", "127.0.0.1", "--metrics-port", str(port)]
        for group in groups:
            args += ["--group", group]
        proc = self.spawn(*args, log="worker.log")
        base = f"http://127.0.0.1:{port}"
        await wait_ok(base + "/readyz", proc)
        return base, proc

    async def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 20)
            except TimeoutError:
                proc.kill()
                proc.wait()

    async def stop_all(self) -> None:
        for proc in self.procs:
            await self.stop(proc)


async def wait_ok(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(int(timeout_s * 5)):
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} never answered 200")


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    for _ in range(int(timeout_s * 4)):
        if await check():
            return
        await asyncio.sleep(0.25)
    raise RuntimeError(f"timed out waiting for {what}")


async def bounded(n: int, make: Callable[[int], Awaitable[Any]], limit: int = 32) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(i: int) -> Any:
        async with sem:
            return await make(i)

    return await asyncio.gather(*(one(i) for i in range(n)))


async def call(http: aiohttp.ClientSession, method: str, url: str, ok: int = 200,
                **kw: Any) -> Any:
    async with http.request(method, url, **kw) as resp:
        body = await resp.json(content_type=None)
        if resp.status != ok:
            raise RuntimeError(f"{method} {url}: {resp.status} {body}")
        return body
