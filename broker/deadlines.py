"""Task time limits with one timer per worker instead of one per task.

``asyncio.timeout()`` schedules and cancels a timer handle for every task: about
15 µs, some 5 % of what a no-op task costs the worker. A long limit (the default is
600 s) does not need that precision, so such limits are kept in a dict and checked
by one sweep every ``TICK`` seconds; they fire up to ``TICK`` late. Limits shorter
than ``EXACT_BELOW`` seconds keep using ``asyncio.timeout()``.
"""

from __future__ import annotations

import asyncio

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
