"""The system the fault-injection test runs and breaks: real servers and real processes.

* a private ``redis-server`` with ``--appendonly yes --appendfsync always``, crashed with
  SIGKILL and started again on the same port and append-only file;
* a private SeaweedFS (S3), stopped with SIGKILL (it may sit on SIGTERM for seconds) and
  started again on the same ports and data directory;
* ``echo-gateway serve --workers 2`` (a killed child takes the whole ``serve`` down, see
  ``gateway.runner.supervise``, so it is started again whole);
* ``echo-gateway worker`` processes (every group), killed with SIGKILL and replaced; their
  ``/metrics`` are read before each kill, so the counters of dead workers are kept;
* the speech API (``TRANSCRIBER=openai``) and the Anthropic API, emulated in this process.

Every child is started from the event loop's thread with ``child_preexec`` (it dies with
this process) and reaped on exit.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp
from emulators.anthropic import AnthropicEmulator
from emulators.openai_audio import OpenAIAudioEmulator, Responder
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_until

from config import Settings
from devstack.children import child_preexec
from devstack.servers import RedisServer, SeaweedServer, free_port
from storage.s3_client import ensure_bucket, open_s3

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "fault-admin-token-0123456789"
SPEECH_KEY = "sk-fault-speech"
LLM_KEY = "fault-llm-key"
BUCKET = "fault-audio"
#: Settings scaled down for a run of minutes: a killed worker's entries move after 5 s
#: (production: 30 s). Everything else keeps its default.
SCALED_SETTINGS = {"STREAM_LEASE_S": "5", "SHUTDOWN_GRACE_S": "2"}
STOP_TIMEOUT_S = 15.0
METRICS_TIMEOUT_S = 2.0

#: Sample name + sorted labels -> value, from one worker's /metrics.
MetricSamples = dict[str, float]


class KillableSeaweed(SeaweedServer):
    """SeaweedFS that can crash: SIGKILL, then :meth:`start` again on the same ports and data."""

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


@dataclass
class Worker:
    """One ``echo-gateway worker`` process and the last counters read from it."""

    proc: subprocess.Popen[bytes]
    metrics_port: int
    started_s: float = field(default_factory=time.time)
    samples: MetricSamples = field(default_factory=dict)
    #: When it first served /metrics (its consumer groups run), if it has.
    running_s: float | None = None

    @property
    def running(self) -> bool:
        return self.running_s is not None

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def parse_samples(text: str) -> MetricSamples:
    samples: MetricSamples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


class FaultStack:
    """``async with FaultStack(tmp_dir, responder=...) as stack``: everything up; all gone on exit."""

    def __init__(self, root: Path, *, speech: Responder, summary_latency_s: float = 0.1,
                 speech_latency_s: float = 0.2) -> None:
        self.root = root
        self.redis = RedisServer(
            root / "redis", persistent=True, extra_args=("--appendfsync", "always")
        )
        self.s3 = KillableSeaweed(root / "s3")
        self.speech = OpenAIAudioEmulator(
            api_key=SPEECH_KEY, responder=speech, latency_s=speech_latency_s
        )
        self.llm = AnthropicEmulator(
            api_key=LLM_KEY, latency_s=summary_latency_s, responder=lambda body: "A summary."
        )
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.gateway: subprocess.Popen[bytes] | None = None
        self.workers: list[Worker] = []
        self.dead_workers: list[Worker] = []
        self._logs = root / "logs"
        self._http: aiohttp.ClientSession | None = None
        self._rng = random.Random(14)

    # --- the whole stack

    async def __aenter__(self) -> Self:
        self._logs.mkdir(parents=True, exist_ok=True)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=METRICS_TIMEOUT_S))
        try:
            await self.redis.start()
            await self.s3.start()
            await self.speech.start()
            await self.llm.__aenter__()
            await self.wait_for_s3()
            await self.start_gateway()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        procs = [w.proc for w in self.workers + self.dead_workers]
        await _stop(procs + ([self.gateway] if self.gateway else []))
        if self._http is not None:
            await self._http.close()
        await self.speech.close()
        if self.llm.base_url:
            await self.llm.__aexit__(None, None, None)
        self.s3.kill()
        self.redis.stop()

    @property
    def env(self) -> dict[str, str]:
        """The environment of the gateway and worker processes."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "REDIS_URL": self.redis.url,
            "S3_ENDPOINT_URL": self.s3.endpoint_url,
            "S3_BUCKET": BUCKET,
            "AWS_ACCESS_KEY_ID": self.s3.access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
            "TRANSCRIBER": "openai",
            "TRANSCRIBER_URL": self.speech.base_url,
            "TRANSCRIBER_API_KEY": SPEECH_KEY,
            "ANTHROPIC_API_KEY": LLM_KEY,
            "ANTHROPIC_BASE_URL": self.llm.base_url,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "LOG_LEVEL": "warning",
            "LOG_FORMAT": "json",
            **SCALED_SETTINGS,
        }

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        with (self._logs / log_name).open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, env=self.env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=child_preexec(),  # noqa: PLW1509 - nothing outlives the test
            )

    async def _wait_http(self, url: str, proc: subprocess.Popen[bytes], what: str) -> None:
        assert self._http is not None

        async def answers() -> bool:
            assert proc.poll() is None, f"{what} exited with {proc.returncode}; see {self._logs}"
            assert self._http is not None
            async with self._http.get(url) as response:
                return response.status == 200

        await wait_until(answers, timeout_s=60, interval_s=0.2, message=f"{what} did not start",
                         retry_on=(aiohttp.ClientError, TimeoutError))

    # --- Redis

    def crash_redis(self) -> None:
        self.redis.kill()

    async def start_redis(self) -> None:
        await self.redis.start()  # same port, same data dir: the AOF is loaded

    # --- S3

    def crash_s3(self) -> None:
        self.s3.kill()

    async def start_s3(self) -> None:
        await self.s3.start()  # same ports and data directory
        await self.wait_for_s3()

    async def wait_for_s3(self) -> None:
        async with open_s3(self.settings) as s3:
            await wait_until(lambda: ensure_bucket(s3, BUCKET), until=lambda _: True,
                             timeout_s=60, interval_s=0.2, retry_on=(Exception,),
                             message="the S3 bucket is not reachable")

    # --- the gateway

    async def start_gateway(self) -> None:
        self.gateway = self._spawn(
            ["serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "2"],
            "gateway.log",
        )
        await self._wait_http(f"{self.base_url}/healthz", self.gateway, "serve --workers 2")

    def kill_gateway_child(self) -> int:
        """SIGKILL one of the serve supervisor's processes; returns its pid."""
        assert self.gateway is not None
        children = children_of(self.gateway.pid)
        assert children, "serve --workers 2 runs no process"
        pid = self._rng.choice(children)
        os.kill(pid, signal.SIGKILL)
        return pid

    async def wait_for_gateway_exit(self) -> None:
        """Until the supervisor has stopped (it stops its other child when one dies)."""
        gateway = self.gateway
        assert gateway is not None
        await wait_until(gateway.poll, until=lambda code: code is not None, timeout_s=30,
                         interval_s=0.05, message="serve did not stop after a child died")

    # --- workers

    async def wait_for_workers(self) -> None:
        """Until every worker answers ``/readyz`` (its groups run and Redis and S3 answer)."""
        for worker in list(self.workers):
            await self._wait_http(
                f"http://127.0.0.1:{worker.metrics_port}/readyz", worker.proc, "a worker"
            )

    def start_worker(self) -> Worker:
        port = free_port()
        worker = Worker(self._spawn(
            ["worker", "--metrics-host", "127.0.0.1", "--metrics-port", str(port)],
            f"worker-{len(self.workers) + len(self.dead_workers)}.log",
        ), port)
        self.workers.append(worker)
        return worker

    async def kill_random_worker(self, rng: random.Random) -> Worker:
        """SIGKILL a random running worker (its counters read first); start its replacement.

        One still starting has no work to lose, so a running one is chosen if there is one."""
        victim = rng.choice([w for w in self.workers if w.running] or self.workers)
        await self.scrape(victim)
        victim.proc.kill()
        victim.proc.wait()
        self.workers.remove(victim)
        self.dead_workers.append(victim)
        return self.start_worker()

    async def scrape(self, worker: Worker) -> bool:
        """Keep the worker's latest counters; whether it answered (one still starting does not)."""
        assert self._http is not None
        try:
            async with self._http.get(f"http://127.0.0.1:{worker.metrics_port}/metrics") as resp:
                if resp.status == 200:
                    worker.samples = parse_samples(await resp.text())
                    if worker.running_s is None:
                        worker.running_s = time.time()
                    return True
        except (aiohttp.ClientError, TimeoutError):
            pass
        return False

    async def scrape_all(self) -> int:
        """Scrape every running worker; how many answered."""
        return sum([await self.scrape(worker) for worker in list(self.workers)])

    def metric_total(self, name: str, **labels: str) -> float:
        """The sum of ``name`` over every worker that ever ran, matching ``labels``."""
        wanted = [f"{k}={v}" for k, v in labels.items()]
        total = 0.0
        for worker in self.workers + self.dead_workers:
            for key, value in worker.samples.items():
                sample, _, rest = key.partition("{")
                if sample == name and all(w in rest.rstrip("}").split(",") for w in wanted):
                    total += value
        return total


async def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM, a grace period (the loop keeps serving the emulators meanwhile), SIGKILL."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    try:
        await wait_until(lambda: [p.pid for p in procs if p.poll() is None],
                         until=lambda running: not running, timeout_s=STOP_TIMEOUT_S,
                         interval_s=0.1, message="processes ignored SIGTERM")
    except AssertionError:
        pass  # killed below
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
