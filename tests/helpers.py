"""Small helpers for tests that run real workers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from broker import Worker


async def wait_for(
    predicate: Callable[[], bool],
    timeout: float = 20.0,  # noqa: ASYNC109 - a polling helper; callers pass a number
    every: float = 0.02,
) -> None:
    """Poll until ``predicate()`` holds; fail the test with a clear message if it never does."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """Run a worker in this event loop for the duration of the block, then drain it."""
    task = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: worker.ready or task.done())
        if task.done():
            task.result()
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, timeout=worker.shutdown_timeout + 10)
