"""The one way tests wait for something to happen: poll a condition until it holds.

A fixed ``asyncio.sleep`` is too short on a loaded machine and too long on an idle
one; :func:`wait_until` returns as soon as the condition holds and, when it never
does, fails with the last value it saw instead of hanging.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

_NOTHING_YET = "(no value yet)"


@overload
async def wait_until(
    condition: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], object] = ...,
    timeout_s: float = ...,
    interval_s: float = ...,
    message: str = ...,
    retry_on: tuple[type[Exception], ...] = ...,
) -> T: ...


@overload
async def wait_until(
    condition: Callable[[], T],
    *,
    until: Callable[[T], object] = ...,
    timeout_s: float = ...,
    interval_s: float = ...,
    message: str = ...,
    retry_on: tuple[type[Exception], ...] = ...,
) -> T: ...


async def wait_until(
    condition: Callable[[], Any],
    *,
    until: Callable[[Any], object] = bool,
    timeout_s: float = 10.0,
    interval_s: float = 0.05,
    message: str = "condition not met",
    retry_on: tuple[type[Exception], ...] = (),
) -> Any:
    """Call ``condition`` (sync or async) every ``interval_s`` until its value passes ``until``
    (truthiness by default), and return that value.

    ``until`` keeps the value itself for the report: ``wait_until(lambda: redis.zcard(k),
    until=lambda n: n == 0)`` fails with the count it last saw. Exceptions in ``retry_on``
    mean "not yet" (a server still starting); any other exception fails at once.

    After ``timeout_s``, a call still in progress included, raises ``AssertionError`` with
    ``message`` and the last value (or exception) seen.
    """
    last: object = _NOTHING_YET
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            while True:
                try:
                    value = condition()
                    if inspect.isawaitable(value):
                        value = await value
                except retry_on as exc:
                    last = exc
                else:
                    if until(value):
                        return value
                    last = value
                await asyncio.sleep(interval_s)
    except TimeoutError:
        if not deadline.expired():
            raise  # the condition's own TimeoutError
        raise AssertionError(
            f"{message} (waited {timeout_s} s; last value: {last!r})"
        ) from (last if isinstance(last, BaseException) else None)
