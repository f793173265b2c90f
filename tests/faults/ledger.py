"""The ledger: what producers were told was confirmed, against what handlers ran.

Producers record every send in memory (confirmed, or the error it raised, and how
long it took). Handlers run in worker processes and append one line per event to a
shared file with a single ``O_APPEND`` write, so lines from many processes never
interleave (tests/apps/faults_app.py):

    start <task id> <pid> <attempt> <redelivered 0|1> <x-delivery-count|-> <epoch s>
    done  <task id> <pid> <attempt> <epoch s>

A producer in a process of its own appends one line per confirmed send, with what
the task was meant to do (tests/apps/soak_producer.py):

    sent  <task id> <kind>

The verdict counts from these, never from the broker's queue counts:

    lost        confirmed (or otherwise known to be queued), but never completed
                and not in a dead-letter queue where the scenario allows that: must be 0
    duplicates  completions beyond the first, per task: allowed, counted, reported
    stall       the longest time, while the scenario ran, without any progress
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Run:
    """One start of a handler in a worker process."""

    task_id: str
    pid: int
    attempt: int
    redelivered: bool
    delivery_count: int | None
    at: float


@dataclass(frozen=True)
class Done:
    task_id: str
    pid: int
    attempt: int
    at: float


@dataclass(frozen=True)
class Send:
    """One call to ``send`` and how it ended."""

    task_id: str
    started: float
    ended: float
    error: str | None  # None: confirmed

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass(frozen=True)
class Verdict:
    scenario: str
    sent: int
    confirmed: int
    raised: int
    completed: int
    dead: int
    lost: list[str]
    duplicates: int
    longest_stall: float
    longest_send: float

    def row(self) -> tuple[str, int, int, int, int, int, str]:
        return (
            self.scenario,
            self.confirmed,
            self.completed,
            self.dead,
            len(self.lost),
            self.duplicates,
            f"{self.longest_stall:.1f}",
        )

    def __str__(self) -> str:
        lost = f"{len(self.lost)} (first: {', '.join(self.lost[:5])})" if self.lost else "0"
        return (
            f"{self.scenario}: sent {self.sent}, confirmed {self.confirmed}, raised "
            f"{self.raised}, completed {self.completed}, dead-lettered {self.dead}, "
            f"lost {lost}, duplicates {self.duplicates}, longest stall "
            f"{self.longest_stall:.1f} s, longest send {self.longest_send:.1f} s"
        )


@dataclass
class Ledger:
    """One scenario's record; ``path`` is the file its workers append to."""

    path: Path
    sends: list[Send] = field(default_factory=list)
    #: Tasks known to be queued without a confirm of ours (published raw, or by
    #: another process): they count for ``lost`` like confirmed ones.
    expected: set[str] = field(default_factory=set)
    started_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.path.touch()

    # -- producer side ------------------------------------------------------------

    def sent(self, task_id: str, started: float, error: BaseException | None = None) -> None:
        self.sends.append(
            Send(task_id, started, time.time(), None if error is None else type(error).__name__)
        )

    @property
    def confirmed(self) -> set[str]:
        return {s.task_id for s in self.sends if s.error is None}

    @property
    def confirm_times(self) -> list[float]:
        return sorted(s.ended for s in self.sends if s.error is None)

    # -- handler side ---------------------------------------------------------------

    def read(self) -> tuple[list[Run], list[Done]]:
        runs: list[Run] = []
        dones: list[Done] = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "start" and len(parts) == 7:
                count = None if parts[5] == "-" else int(parts[5])
                runs.append(
                    Run(
                        parts[1],
                        int(parts[2]),
                        int(parts[3]),
                        parts[4] == "1",
                        count,
                        float(parts[6]),
                    )
                )
            elif parts[0] == "done" and len(parts) == 5:
                dones.append(Done(parts[1], int(parts[2]), int(parts[3]), float(parts[4])))
        return runs, dones

    def published(self) -> dict[str, str]:
        """Task ids a producer process confirmed (``sent`` lines), with their kind."""
        found: dict[str, str] = {}
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "sent":
                found[parts[1]] = parts[2]
        return found

    def completed(self) -> Counter[str]:
        return Counter(d.task_id for d in self.read()[1])

    def runs_by_task(self) -> dict[str, list[Run]]:
        by_task: dict[str, list[Run]] = defaultdict(list)
        for run in self.read()[0]:
            by_task[run.task_id].append(run)
        return by_task

    # -- the verdict ----------------------------------------------------------------

    def verdict(
        self,
        scenario: str,
        *,
        dead: set[str] | None = None,
        until: float | None = None,
    ) -> Verdict:
        """Compare what was confirmed with what completed (or was dead-lettered)."""
        dead = dead or set()
        _, dones = self.read()
        completed = Counter(d.task_id for d in dones)
        queued = self.confirmed | self.expected
        lost = sorted(queued - set(completed) - dead)
        # Progress is measured from the first send to the last completion.
        start = min((s.started for s in self.sends), default=self.started_at)
        end = until or max([d.at for d in dones] + self.confirm_times + [start])
        stall = longest_gap([d.at for d in dones] + self.confirm_times, start, end)
        return Verdict(
            scenario=scenario,
            sent=len({s.task_id for s in self.sends}) + len(self.expected - self.confirmed),
            confirmed=len(queued),
            raised=sum(1 for s in self.sends if s.error is not None),
            completed=len(completed),
            dead=len(dead & queued),
            lost=lost,
            duplicates=sum(n - 1 for n in completed.values()),
            longest_stall=stall,
            longest_send=max((s.seconds for s in self.sends), default=0.0),
        )


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest interval in [start, end] containing none of ``times``."""
    points = sorted([start, end, *(t for t in times if start <= t <= end)])
    return max((b - a for a, b in itertools.pairwise(points)), default=0.0)


def append_line(path: str, line: str) -> None:
    """One ``O_APPEND`` write per line: lines from many processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
