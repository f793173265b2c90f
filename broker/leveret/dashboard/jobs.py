"""Replays and purges started from the dashboard, run in the background with their
progress kept for the page to poll.

Each is one call of ``DeadLetters.replay`` or ``DeadLetters.purge``, with their
guarantees: every message is published and confirmed before it is acknowledged, so
stopping the dashboard at any moment (SIGKILL included) loses nothing. One job runs
at a time; the grouping scan waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from leveret.dashboard.groups import GroupIndex
from leveret.deadletter import DeadLetters, Filter, MoveReport, Report
from leveret.errors import LeveretError

audit = logging.getLogger("leveret.dashboard.audit")

#: Finished jobs kept for their pages.
KEEP = 50


@dataclass
class Job:
    id: int
    action: str  # replay or purge
    who: str
    where: Filter
    expected: int  # matching letters when it started, as far as the groups knew
    rate: float | None = None
    to: str | None = None
    state: str = "queued"  # queued, running, done, failed
    parts: dict[str, MoveReport] = field(default_factory=dict)
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    @property
    def moved(self) -> int:
        return sum(p.moved for p in self.parts.values())

    @property
    def scanned(self) -> int:
        return sum(p.scanned for p in self.parts.values())

    @property
    def total(self) -> int:
        return sum(p.total for p in self.parts.values())

    @property
    def done(self) -> bool:
        return self.state in ("done", "failed")

    @property
    def percent(self) -> int:
        """Moved of those expected, else looked at of those waiting; 100 once ended."""
        if self.done:
            return 100
        if self.expected:
            return min(99, int(100 * self.moved / self.expected))
        total = self.total
        return min(99, int(100 * self.scanned / total)) if total else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "who": self.who,
            "filter": self.where.describe(),
            "expected": self.expected,
            "rate": self.rate,
            "to": self.to,
            "state": self.state,
            "moved": self.moved,
            "scanned": self.scanned,
            "total": self.total,
            "percent": self.percent,
            "error": self.error,
            "queues": {
                q: {"moved": p.moved, "kept": p.kept, "scanned": p.scanned, "total": p.total}
                for q, p in self.parts.items()
            },
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class Jobs:
    """Starts jobs one at a time and remembers the recent ones."""

    def __init__(self, dead: DeadLetters, index: GroupIndex) -> None:
        self.dead = dead
        self.index = index
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._one_at_a_time = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, job_kind: str, who: str, where: Filter, **options: Any) -> Job:
        job = Job(
            next(self._ids),
            job_kind,
            who,
            where,
            expected=int(options.pop("expected", 0)),
            rate=options.get("rate"),
            to=options.get("to"),
        )
        self.jobs[job.id] = job
        for old in sorted(self.jobs)[:-KEEP]:
            del self.jobs[old]
        audit.info(
            "%s started %s #%d of %s%s%s",
            who,
            job_kind,
            job.id,
            where.describe(),
            f" to {job.to}" if job.to else "",
            f" at {job.rate:g}/s" if job.rate else "",
            extra={"who": who, "action": job_kind, "job": job.id, "filter": where.describe()},
        )
        task = asyncio.create_task(self._run(job, options))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Sole use of the dead-letter queues: no job and no grouping scan meanwhile.

        A browse sees only the messages nobody else holds, so reads wait for a running
        job and stop a running scan rather than see part of a queue."""
        async with self._one_at_a_time, self.index.paused():
            yield

    @property
    def running(self) -> Job | None:
        return next((j for j in self.jobs.values() if not j.done), None)

    async def _run(self, job: Job, options: dict[str, Any]) -> None:
        def progress(part: MoveReport) -> None:
            job.parts[part.queue] = part

        async with self.exclusive():
            job.state = "running"
            report: Report | None = None
            try:
                if job.action == "replay":
                    report = await self.dead.replay(job.where, on_progress=progress, **options)
                else:
                    report = await self.dead.purge(job.where, on_progress=progress)
            except (LeveretError, OSError) as exc:
                job.error = str(exc)
            except Exception as exc:  # the page must say it stopped, whatever stopped it
                audit.exception("%s #%d stopped", job.action, job.id)
                job.error = f"{type(exc).__name__}: {exc}"
            if report is not None:
                for part in report.queues:
                    job.parts[part.queue] = part
                if report.errors:
                    job.error = "; ".join(report.errors)
            job.state = "failed" if job.error else "done"
            job.finished_at = time.time()
        audit.info(
            "%s %s #%d %s: %d moved%s",
            job.who,
            job.action,
            job.id,
            job.state,
            job.moved,
            f" ({job.error})" if job.error else "",
            extra={"who": job.who, "action": job.action, "job": job.id, "moved": job.moved},
        )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
