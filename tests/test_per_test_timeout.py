"""The per-test timeout (tests/per_test_timeout.py), proved on small pytest sessions of its own:
a hung await fails that test alone, and the session goes on."""

from __future__ import annotations

import time

import pytest

INNER_INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
test_timeout_s = 1
timeout = 120
timeout_method = thread
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytest session of its own with a one-second per-test timeout."""
    pytester.makeini(INNER_INI)
    pytester.makeconftest('pytest_plugins = ["per_test_timeout"]')
    return pytester


def _run(inner: pytest.Pytester, source: str) -> tuple[pytest.RunResult, float]:
    inner.makepyfile(test_example=source)
    started = time.monotonic()
    result = inner.runpytest("-p", "no:cacheprovider")
    return result, time.monotonic() - started


def test_a_test_hung_in_an_await_fails_alone_with_the_tasks_stacks(inner: pytest.Pytester) -> None:
    result, took_s = _run(inner, """
        import asyncio

        async def test_before():
            await asyncio.sleep(0)

        async def test_hangs():
            helper = asyncio.create_task(asyncio.Event().wait(), name="the-helper")
            await asyncio.Event().wait()

        async def test_after():
            await asyncio.sleep(0)
    """)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*per-test timeout: the call of test_example.py::test_hangs did not finish within 1.0 s*",
        "*<Task *  <- this test or fixture",
        "*in test_hangs",
        "*await asyncio.Event().wait()",
        "*in wait",
        "*name='the-helper'*",
    ])
    assert took_s < 30  # the pytest-timeout watchdog (120 s) never fired


def test_a_test_that_swallows_the_cancellation_still_fails(inner: pytest.Pytester) -> None:
    result, _ = _run(inner, """
        import asyncio
        import contextlib

        async def test_swallows_twice():
            for _ in range(2):
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.Event().wait()

        async def test_after():
            pass
    """)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*per-test timeout: the call of *test_swallows_twice*"])


def test_a_hung_async_fixture_fails_its_test_at_setup_or_teardown(inner: pytest.Pytester) -> None:
    result, _ = _run(inner, """
        import asyncio
        import pytest

        @pytest.fixture
        async def stuck_setup():
            await asyncio.Event().wait()

        @pytest.fixture
        async def stuck_teardown():
            yield "value"
            await asyncio.Event().wait()

        async def test_setup_hangs(stuck_setup):
            pass

        async def test_teardown_hangs(stuck_teardown):
            assert stuck_teardown == "value"

        async def test_after():
            pass
    """)
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines_random([
        "*per-test timeout: the setup of test_example.py::test_setup_hangs did not finish*",
        "*per-test timeout: the teardown of test_example.py::test_teardown_hangs did not finish*",
        "*in stuck_teardown",
    ])


def test_the_marker_gives_one_test_a_longer_timeout(inner: pytest.Pytester) -> None:
    result, _ = _run(inner, """
        import asyncio
        import pytest

        @pytest.mark.test_timeout(10)
        async def test_slow_but_allowed():
            await asyncio.sleep(1.5)

        async def test_too_slow():
            await asyncio.sleep(1.5)
    """)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*the call of test_example.py::test_too_slow did not finish*"])
