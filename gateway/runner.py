"""Running apps: one process on uvloop, or N processes sharing a port (SO_REUSEPORT).

Shutdown on SIGTERM or SIGINT: the site stops accepting, in-flight requests
get ``shutdown_grace_s`` to finish, then the cleanup contexts run in reverse
(consumers stop, clients close).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import structlog
import uvloop
from aiohttp import web

from devstack.children import child_preexec

log = structlog.get_logger(__name__)


def run_async(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``main`` on a uvloop event loop and return its exit code."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


async def wait_for_stop_signal() -> int:
    """Return the number of the first SIGTERM or SIGINT received."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[int] = loop.create_future()

    def received_signal(signum: int) -> None:
        if not received.done():
            received.set_result(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, received_signal, signum)
    try:
        return await received
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def serve_app(
    app: web.Application,
    *,
    host: str,
    port: int,
    reuse_port: bool = False,
    shutdown_grace_s: float = 10.0,
    on_started: Callable[[], None] | None = None,
) -> int:
    """Serve ``app`` until SIGTERM/SIGINT, then shut down in order."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_grace_s)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port)
        await site.start()
        log.info("http_serving", url=f"http://{host}:{port}", pid=os.getpid())
        if on_started is not None:
            on_started()
        signum = await wait_for_stop_signal()
        log.info("stopping", signal=signal.Signals(signum).name)
    finally:
        await runner.cleanup()
    return 0


def supervise(child_args: Sequence[str], count: int, *, grace_s: float) -> int:
    """Run ``count`` copies of ``python -m gateway.cli <child_args>``; forward SIGTERM/SIGINT.

    If one child dies, the others are stopped too: a half-sized fleet on a
    shared port would silently halve capacity. If the supervisor itself is
    killed, its children get SIGTERM (Linux), rather than serving on as orphans.
    """
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *child_args],
            preexec_fn=child_preexec(),  # noqa: PLW1509 - prctl only (devstack.children)
        )
        for _ in range(count)
    ]
    stopping = False

    def stop_all(signum: int, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    exit_code = 0
    try:
        while any(child.poll() is None for child in children):
            for child in children:
                code = child.poll()
                if code is not None and not stopping:
                    log.error("serve_child_exited", pid=child.pid, code=code)
                    exit_code = code or 1
                    stop_all(signal.SIGTERM)
            try:
                children[0].wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
    finally:
        deadline_s = grace_s + 5
        for child in children:
            try:
                child.wait(timeout=deadline_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return exit_code
