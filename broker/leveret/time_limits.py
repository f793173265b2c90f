"""Task time limits: a handler that runs past its limit fails its attempt with TaskTimeout.

Long limits share one timer per worker instead of one per task.

``asyncio.timeout()`` schedules and cancels a timer handle for every task: about
15 µs, some 5 % of what a no-op task costs the worker. A long limit (the default is
600 s) does not need that precision, so such limits are kept in a dict and checked
by one sweep every ``TICK`` seconds; they fire up to ``TICK`` late. Limits shorter
than ``EXACT_BELOW`` seconds keep using ``asyncio.timeout()``.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

from pydantic import BaseModel

from leveret.errors import TaskTimeout
from leveret.task import Registration, TaskContext

TICK = 0.1
EXACT_BELOW = 10.0


class Deadlines:
    """Cancels the tasks that outlive their limit; the worker turns that into a timeout."""

    def __init__(self) -> None:
        self._due: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._earliest = float("inf")
        self._sweeping: asyncio.TimerHandle | None = None

    def enter(self, seconds: float) -> asyncio.Task[object]:
        """Start the current task's clock."""
        task: asyncio.Task[object] = asyncio.current_task()  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        due = loop.time() + seconds
        self._due[task] = due
        if due < self._earliest:
            self._earliest = due
        if self._sweeping is None:
            self._sweeping = loop.call_later(TICK, self._sweep)
        return task

    def leave(self, task: asyncio.Task[object]) -> bool:
        """Stop the task's clock; True if it ran out (its cancellation is then undone)."""
        del self._due[task]
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()
            return True
        return False

    def _sweep(self) -> None:
        self._sweeping = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= self._earliest:
            earliest = float("inf")
            for task, due in self._due.items():
                if due <= now:
                    if task not in self._expired:
                        self._expired.add(task)
                        task.cancel()
                elif due < earliest:
                    earliest = due
            self._earliest = earliest
        if self._due:
            self._sweeping = loop.call_later(TICK, self._sweep)


class TimeLimits:
    """Runs a handler (async on the loop, sync on the worker's threads) within its limit."""

    def __init__(self, default_seconds: float, threads: Executor | None = None) -> None:
        self.default_seconds = default_seconds
        #: Where sync handlers run; set by the worker when it starts.
        self.threads = threads
        self._deadlines = Deadlines()

    async def run(self, reg: Registration, payload: BaseModel, ctx: TaskContext) -> None:
        """Run the handler; raise ``TaskTimeout`` if it outlives its limit."""
        timeout = reg.timeout or self.default_seconds
        if timeout < EXACT_BELOW:
            scope = asyncio.timeout(timeout)
            try:
                async with scope:
                    await self._call(reg, payload, ctx)
            except TimeoutError:
                if scope.expired():
                    raise _timed_out(reg, timeout) from None
                raise
            return
        task = self._deadlines.enter(timeout)
        try:  # the hot path (the default limit is long): the call inlined
            if reg.is_async:
                await reg.call(payload, ctx)
            else:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self.threads, reg.call, payload, ctx)
        except asyncio.CancelledError:
            if self._deadlines.leave(task):
                raise _timed_out(reg, timeout) from None
            raise
        except BaseException:
            self._deadlines.leave(task)
            raise
        self._deadlines.leave(task)

    async def _call(self, reg: Registration, payload: BaseModel, ctx: TaskContext) -> None:
        if reg.is_async:
            await reg.call(payload, ctx)
        else:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.threads, reg.call, payload, ctx)


def _timed_out(reg: Registration, timeout: float) -> TaskTimeout:
    return TaskTimeout(
        f"task {reg.task.name!r} ran past its timeout of {timeout:g} s"
        + ("" if reg.is_async else " (its thread was abandoned, not stopped)")
    )
