"""Long task time limits share one sweep; they must still fire, and only when due."""

from __future__ import annotations

import asyncio

import pytest

from leveret import time_limits as deadlines
from leveret.time_limits import Deadlines
from tests.support.waiting import wait_for


async def test_a_task_past_its_limit_is_cancelled_and_reported() -> None:
    limits = Deadlines()

    async def slow() -> bool:
        task = limits.enter(0.15)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return limits.leave(task)
        limits.leave(task)
        return False

    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(slow(), 30) is True
    took = asyncio.get_running_loop().time() - started
    assert 0.15 <= took < 0.15 + deadlines.TICK + 3.0, "cancelled when due, not at the end"


async def test_tasks_within_their_limit_are_left_alone() -> None:
    limits = Deadlines()

    async def quick(i: int) -> bool:
        task = limits.enter(3 + i)
        await asyncio.sleep(0.01)
        return limits.leave(task)

    assert await asyncio.gather(*(quick(i) for i in range(50))) == [False] * 50
    await wait_for(lambda: limits._sweeping is None, what="the sweep stops once nothing is timed")


async def test_an_outside_cancellation_is_not_a_timeout() -> None:
    limits = Deadlines()
    entered = asyncio.Event()

    async def victim() -> None:
        task = limits.enter(60)
        entered.set()
        try:
            await asyncio.sleep(5)
        finally:
            assert limits.leave(task) is False

    task = asyncio.ensure_future(victim())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
