"""wait_until (tests/waiting.py), the one polling helper of the tests."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from waiting import wait_until


async def test_it_returns_the_first_truthy_value_of_a_sync_or_async_condition() -> None:
    counter = itertools.count()
    assert await wait_until(lambda: next(counter) >= 3 and "done", interval_s=0) == "done"

    calls = 0

    async def ready() -> list[int]:
        nonlocal calls
        calls += 1
        return [calls] if calls == 3 else []

    assert await wait_until(ready, interval_s=0) == [3]


async def test_until_judges_the_value_and_the_value_is_returned() -> None:
    values = iter([5, 2, 0, 7])
    assert await wait_until(lambda: next(values), until=lambda n: n == 0, interval_s=0) == 0


async def test_a_timeout_fails_with_the_message_and_the_last_value() -> None:
    values = itertools.count()
    expected = r"queue never drained \(waited 0.2 s; last value: \d+\)"
    with pytest.raises(AssertionError, match=expected):
        await wait_until(lambda: next(values), until=lambda n: n < 0, timeout_s=0.2,
                         interval_s=0.01, message="queue never drained")


async def test_a_condition_that_hangs_is_bounded_by_the_timeout() -> None:
    with pytest.raises(AssertionError, match="still hanging"):
        await wait_until(asyncio.Event().wait, timeout_s=0.2, message="still hanging")


async def test_retry_on_exceptions_mean_not_yet_and_are_reported() -> None:
    attempts = 0

    def connect() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionRefusedError("not listening yet")
        return "connected"

    connected = await wait_until(connect, retry_on=(ConnectionRefusedError,), interval_s=0)
    assert connected == "connected"

    def refuse() -> str:
        raise ConnectionRefusedError("never listening")

    with pytest.raises(AssertionError, match="never listening") as failure:
        await wait_until(refuse, retry_on=(OSError,), timeout_s=0.1, interval_s=0.01)
    assert isinstance(failure.value.__cause__, ConnectionRefusedError)


async def test_other_exceptions_fail_at_once() -> None:
    def broken() -> bool:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await wait_until(broken, timeout_s=30)

    async def times_out_itself() -> bool:
        raise TimeoutError("the condition's own")

    with pytest.raises(TimeoutError, match="the condition's own"):
        await wait_until(times_out_itself, timeout_s=30)
