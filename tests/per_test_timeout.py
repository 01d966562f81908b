"""A per-test timeout for async tests: a hung await fails that test alone, with every task's stack.

How pytest-asyncio (1.x) runs async code: the test coroutine, and each async fixture's
setup and teardown, is one ``asyncio.Runner.run(coro)`` call on the runner of the
test's loop scope (its ``_<scope>_scoped_runner`` fixture). This plugin wraps ``run``
on every fixture value that is an ``asyncio.Runner``, so each of those calls gets a
deadline: ``test_timeout_s`` in the ini (0 turns it off), or
``@pytest.mark.test_timeout(seconds)`` on a test. At the deadline it records the await
chain of every task on the loop, cancels the phase's task (again every second, in case
code under test swallows the cancellation) and fails that setup, call or teardown with
the chains. The session goes on. (Stepping through a test in a debugger: pass
``-o test_timeout_s=0``.)

pytest-timeout's thread method stays, with a much larger timeout, as the last resort:
it ends the whole run, but it alone can stop a main thread blocked outside the event
loop (a sync test, a blocking call inside an async one, a loop that never yields), or
a runner whose closing waits on a task that ignores cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import linecache
import weakref
from collections.abc import Coroutine, Generator, Iterator
from contextvars import Context
from typing import Any, TypeVar

import pytest

INI = "test_timeout_s"
MARKER = "test_timeout"
#: Await chains are followed this deep at most.
_MAX_DEPTH = 200
#: How often the task is cancelled again when code under test swallowed the cancellation.
RECANCEL_S = 1.0

T = TypeVar("T")

_PHASE = pytest.StashKey[tuple[pytest.Item, str]]()
_wrapped: weakref.WeakSet[asyncio.Runner] = weakref.WeakSet()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        INI,
        "Seconds each async test call and each async fixture setup or teardown may take "
        "before that test alone fails (0: no limit).",
        default="120",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(seconds): this test's own per-test timeout (ini: {INI})"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    with _phase(item, "setup"):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    with _phase(item, "call"):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    with _phase(item, "teardown"):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    value = yield
    if isinstance(value, asyncio.Runner):
        _add_deadlines(value, request.config)
    return value


@contextlib.contextmanager
def _phase(item: pytest.Item, phase: str) -> Iterator[None]:
    """Which test and phase the runners' ``run`` calls belong to meanwhile."""
    stash = item.config.stash
    previous = stash.get(_PHASE, None)
    stash[_PHASE] = (item, phase)
    try:
        yield
    finally:
        if previous is None:
            del stash[_PHASE]
        else:
            stash[_PHASE] = previous


def _add_deadlines(runner: asyncio.Runner, config: pytest.Config) -> None:
    if runner in _wrapped:
        return  # a runner of a wider scope, wrapped when it was made
    _wrapped.add(runner)
    run = runner.run

    def run_with_deadline(coro: Coroutine[Any, Any, T], *, context: Context | None = None) -> T:
        current = config.stash.get(_PHASE, None)
        if current is None:
            return run(coro, context=context)
        item, phase = current
        timeout_s = _timeout_s(item)
        if not timeout_s:
            return run(coro, context=context)
        what = f"the {phase} of {item.nodeid}"
        return run(_with_deadline(coro, timeout_s, what), context=context)

    # Patched on this one runner object: pytest-asyncio offers no hook around ``run``.
    runner.run = run_with_deadline  # type: ignore[method-assign]


def _timeout_s(item: pytest.Item) -> float:
    marker = item.get_closest_marker(MARKER)
    if marker is not None:
        return float(marker.args[0])
    return float(item.config.getini(INI))


async def _with_deadline(coro: Coroutine[Any, Any, T], timeout_s: float, what: str) -> T:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    stacks: list[str] = []
    cancels = 0
    handle: asyncio.TimerHandle

    def expire() -> None:
        nonlocal handle, cancels
        if not stacks:
            stacks.append(_tasks_report(loop, task))
        cancels += 1
        task.cancel(f"per-test timeout: {what} took longer than {timeout_s} s")
        handle = loop.call_later(RECANCEL_S, expire)

    handle = loop.call_later(timeout_s, expire)
    try:
        return await coro
    finally:
        handle.cancel()
        if stacks:
            for _ in range(cancels):
                task.uncancel()
            # Raised even if the code swallowed the cancellation and finished.
            raise pytest.fail.Exception(
                f"per-test timeout: {what} did not finish within {timeout_s} s "
                f"(ini {INI}, or @pytest.mark.{MARKER}(seconds) on the test).\n"
                f"Tasks on the loop when it fired, outermost await first:\n{stacks[0]}",
                pytrace=False,
            ) from None


def _tasks_report(loop: asyncio.AbstractEventLoop, main: asyncio.Task[Any]) -> str:
    tasks = sorted(asyncio.all_tasks(loop), key=lambda t: t is not main)
    return "\n\n".join(_await_chain(t, main) for t in tasks)


def _await_chain(task: asyncio.Task[Any], main: asyncio.Task[Any]) -> str:
    """The frames a task is suspended in, from its coroutine down the ``await`` chain
    (``Task.get_stack`` shows only the outermost frame of a suspended task)."""
    lines = [f"{task!r}{'  <- this test or fixture' if task is main else ''}"]
    awaitable: Any = task.get_coro()
    for _ in range(_MAX_DEPTH):
        if awaitable is None:
            break
        if isinstance(awaitable, asyncio.Future):
            lines.append(f"    awaiting {awaitable!r}")
            break
        frame = (getattr(awaitable, "cr_frame", None) or getattr(awaitable, "ag_frame", None)
                 or getattr(awaitable, "gi_frame", None))
        if frame is None:
            inner = _inside(awaitable)
            if inner is None:
                lines.append(f"    awaiting {awaitable!r}")
                break
            awaitable = inner
            continue
        code = frame.f_code
        if code is not _with_deadline.__code__:  # this plugin's own frame
            lines.append(f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}')
            source = linecache.getline(code.co_filename, frame.f_lineno).strip()
            if source:
                lines.append(f"    {source}")
        awaitable = (getattr(awaitable, "cr_await", None) or getattr(awaitable, "ag_await", None)
                     or getattr(awaitable, "gi_yieldfrom", None))
    return "\n".join(lines)


def _inside(awaitable: object) -> object | None:
    """What a wrapper without a public link holds: the async generator behind an
    ``async_generator_asend`` (an ``async with``/``async for`` step), the future behind a
    ``FutureIter``. ``gc.get_referents`` is the only way in."""
    referent: object
    for referent in gc.get_referents(awaitable):
        if hasattr(referent, "ag_frame") or isinstance(referent, asyncio.Future):
            return referent
    return None
