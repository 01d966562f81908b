"""A process's background loops: a task that runs ``loop(stop)`` for the span of a block
(``cleanup_ctx`` generators of the sweepers use it)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def background_loop(
    loop: Callable[[asyncio.Event], Coroutine[Any, Any, None]], *, name: str
) -> AsyncIterator[None]:
    """Run ``loop(stop)`` as a task named ``name`` for the block; at its end set ``stop``,
    cancel the task and wait for it."""
    stop = asyncio.Event()
    task = asyncio.create_task(loop(stop), name=name)
    try:
        yield
    finally:
        # The flag ends the loop even if a library swallowed the cancellation
        # (redis-py can turn a cancelled wait into its TimeoutError).
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
