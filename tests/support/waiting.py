"""Waiting for a condition, never for a fixed time.

A test that sleeps a fixed time and then looks passes on an idle machine and fails on
a busy one. These poll until the condition holds and fail only after a generous
deadline, so that a slow machine makes a test slower, not red.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

#: How long a condition may take before the test fails: far beyond what any of them
#: needs on an idle machine, still well inside the per-test timeout.
PATIENCE = 60.0


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = PATIENCE,
    every: float = 0.02,
    what: str | Callable[[], str] = "",
) -> None:
    """Poll until ``predicate()`` holds (it may be a coroutine function); fail the test
    with a clear message if it never does. ``what`` says what was awaited."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        held = predicate()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(_failure(timeout, what))
        await asyncio.sleep(every)


def wait_until(
    predicate: Callable[[], bool],
    timeout: float = PATIENCE,
    every: float = 0.05,
    what: str | Callable[[], str] = "",
) -> None:
    """``wait_for`` for code outside an event loop (fixtures, threads)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(_failure(timeout, what))
        time.sleep(every)


def _failure(timeout: float, what: str | Callable[[], str]) -> str:
    said = what() if callable(what) else what
    return f"condition not met within {timeout:g} s" + (f": {said}" if said else "")
