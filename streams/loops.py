"""How the runtime's long-lived loops survive: retried through outages, cancelled for sure.

A loop runs one step again and again. Redis outages make it log and back off
(capped) and carry on; a lost group (NOGROUP) is created again at once; any
other error is logged with its traceback and backed off too, so nothing but
cancellation ends a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from redis.exceptions import ResponseError

from streams.redis_types import REDIS_UNAVAILABLE_ERRORS

log = structlog.get_logger(__name__)

BACKOFF_CAP_S = 5.0

Step = Callable[[], Awaitable[None]]


def is_nogroup(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and "NOGROUP" in str(exc)


def raise_if_cancel_was_swallowed() -> None:
    """Raise ``CancelledError`` if this task was cancelled and a callee swallowed it; loops
    that never return to :func:`forever` call it each round, or one swallowed cancellation
    (CPython gh-86296, through redis-py's ``wait_for``) would keep them running for good."""
    raise_if_cancelling(asyncio.current_task())


def raise_if_cancelling(task: asyncio.Task[Any] | None) -> None:
    """:func:`raise_if_cancel_was_swallowed` with the current task looked up once (a hot
    loop's: ``asyncio.current_task`` costs more than the check)."""
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def forever(
    step: Step, what: str, *, stream: str, group: str, recreate_group: Step
) -> None:
    """Run ``step`` again and again; outages back off and recover, nothing kills the loop.

    ``stream`` (the key) and ``group`` name the loop in logs; ``recreate_group``
    runs when Redis says the group is gone.
    """
    failures = 0
    while True:
        try:
            await step()
            failures = 0
            raise_if_cancel_was_swallowed()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            delay_s = min(BACKOFF_CAP_S, 0.1 * 2**failures)
            if is_nogroup(exc):
                log.warning("stream_group_missing", stream=stream, group=group)
                with contextlib.suppress(Exception):
                    await recreate_group()
                    continue
            elif isinstance(exc, REDIS_UNAVAILABLE_ERRORS):
                log.warning("stream_redis_unavailable", loop=what, error=str(exc),
                            retry_in_s=delay_s)
            else:
                log.exception("stream_loop_error", loop=what, stream=stream, group=group)
            await asyncio.sleep(delay_s)


async def cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel and await ``tasks``; cancel again any that swallowed the first cancellation
    (a redis-py call interrupted at the wrong moment can eat a CancelledError)."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("stream_task_failed", task=task.get_name(), error=repr(task.exception()))
