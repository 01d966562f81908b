"""The command line: config, configuration errors, serve --workers, and the dev stack's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from asyncio.subprocess import Process
from pathlib import Path

import aiohttp
import pytest
from waiting import wait_until

from devstack.children import child_preexec
from devstack.servers import free_port
from storage.s3_client import S3Client


def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # the tests judge the exit status themselves
        [sys.executable, "-m", "gateway.cli", *args], check=False,
        env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, timeout=60,
    )


def test_config_prints_effective_settings_with_secrets_masked() -> None:
    result = _run_cli("config", env={"ANTHROPIC_API_KEY": "sk-ant-hush", "REDIS_MAX_CONNECTIONS": "7"})
    assert result.returncode == 0, result.stderr
    assert "sk-ant-hush" not in result.stdout
    lines = {line.split()[0]: line.split(None, 1)[1].strip() for line in result.stdout.splitlines()}
    assert lines["ANTHROPIC_API_KEY"] == "(set, hidden)"
    assert lines["REDIS_MAX_CONNECTIONS"] == "7"


def test_a_bad_variable_stops_the_command_naming_it() -> None:
    result = _run_cli("serve", env={"REDIS_MAX_CONNECTIONS": "lots"})
    assert result.returncode == 2
    assert "REDIS_MAX_CONNECTIONS" in result.stderr


def test_serve_without_redis_url_is_a_configuration_error() -> None:
    result = _run_cli("serve", env={})
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr


async def _wait_http(url: str, status: int, deadline_s: float, proc: Process) -> None:
    async with aiohttp.ClientSession() as session:

        async def answered() -> bool:
            assert proc.returncode is None, "process exited early"
            async with session.get(url) as response:
                return response.status == status

        await wait_until(answered, timeout_s=deadline_s, interval_s=0.2,
                         retry_on=(aiohttp.ClientError,), message=f"{url} never answered {status}")


def _alive_among(pids: list[int]) -> list[int]:
    return [pid for pid in pids if _alive(pid)]


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-eo", "pid=,ppid="], check=True, capture_output=True, text=True
    ).stdout
    found, frontier = [], [pid]
    pairs = [_pid_ppid(line) for line in out.splitlines() if line.strip()]
    while frontier:
        parent = frontier.pop()
        for child, ppid in pairs:
            if ppid == parent:
                found.append(child)
                frontier.append(child)
    return found


def _pid_ppid(line: str) -> tuple[int, int]:
    pid, ppid = line.split()
    return int(pid), int(ppid)


async def _start(*args: str, env: dict[str, str], stdout: int | None = None) -> Process:
    """``python -m gateway.cli ARGS``, killed (SIGTERM) if the test run dies. preexec_fn is
    safe in a process with threads: it only calls prctl (devstack.children)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", *args,
        env={"PATH": os.environ["PATH"], **env}, stdout=stdout, preexec_fn=child_preexec(),
    )


async def _serving(env: dict[str, str], *, workers: int) -> tuple[Process, list[int]]:
    """``serve --workers N`` on a free port, once ready, and the pids of its children."""
    port = free_port()
    proc = await _start("serve", "--host", "127.0.0.1", "--port", str(port),
                        "--workers", str(workers), env=env)
    try:
        await _wait_http(f"http://127.0.0.1:{port}/readyz", 200, 60, proc)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return proc, _children_of(proc.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


@pytest.mark.slow
async def test_serve_with_workers_runs_that_many_processes_on_one_port(
    env: dict[str, str], s3: S3Client
) -> None:
    proc, children = await _serving(env, workers=3)
    try:
        assert len(children) == 3
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited already
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert not [pid for pid in children if _alive(pid)]


@pytest.mark.slow
async def test_a_killed_supervisor_leaves_no_worker_serving(
    env: dict[str, str], s3: S3Client
) -> None:
    proc, children = await _serving(env, workers=2)
    try:
        assert len(children) == 2
    finally:
        proc.kill()  # no chance to stop its children itself
        await proc.wait()
    await wait_until(lambda: _alive_among(children), until=lambda alive: not alive,
                     timeout_s=15, interval_s=0.1, message="orphaned workers kept serving")


@pytest.mark.slow
async def test_dev_serves_ready_and_leaves_no_process_after_sigterm(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "echo-data"
    proc = await _start("dev", "--port", str(port), "--data-dir", str(data_dir),
                        env={"LOG_LEVEL": "warning"}, stdout=asyncio.subprocess.PIPE)
    try:
        await _wait_http(f"http://127.0.0.1:{port}/readyz", 200, 90, proc)
        children = _children_of(proc.pid)
        assert children, "dev should run a private Redis and S3 server"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/demo.json") as resp:
                demo_id = (await resp.json())["project_id"]
            token = (data_dir / "admin-token").read_text().strip()
            made = await asyncio.to_thread(
                _run_cli, "project", "create", "--name", "Second", "--data-dir", str(data_dir), env={}
            )
            assert made.returncode == 0, made.stderr
            async with http.get(
                f"http://127.0.0.1:{port}/api/host/projects/{made.stdout.strip()}",
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                assert resp.status == 200, "project create --data-dir used dev's Redis"
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited already
            proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    printed = out.decode()
    for line in (f"http://127.0.0.1:{port}/p/{demo_id}", f"http://127.0.0.1:{port}/host/{demo_id}",
                 f"http://127.0.0.1:{port}/api/openapi.json", token):
        assert line in printed, f"dev prints {line}"
    await wait_until(lambda: _alive_among(children), until=lambda alive: not alive,
                     timeout_s=10, interval_s=0.1, message="dev left processes behind")
    assert (data_dir / "redis" / "appendonlydir").is_dir(), "Redis persists in the data dir"
