"""The soak test's samples and how they are judged.

A process is sampled every 10 s: resident memory, open file descriptors and asyncio
tasks alive on its loop. The first ``warmup`` seconds are left out (imports finish,
caches and buffers fill, the first redeliveries arrive). What remains is cut in
thirds, and the last third is compared with the first:

    memory      the median of the last third is less than 10 % above the median of
                the first (medians: one sample taken in a burst does not decide)
    files       the highest count of the last third is at most FD_MARGIN above the
                highest of the first
    tasks       the same with TASK_MARGIN: in-flight deliveries come and go with the
                load, up to the concurrency, so a leak is a rise beyond that

A leak of one of anything per task, per retry or per killed worker climbs by
hundreds over a run and fails these; the load of a shared machine only moves them
within the margins.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

RSS_GROWTH = 0.10
FD_MARGIN = 4
TASK_MARGIN = 12


@dataclass(frozen=True)
class Sample:
    """One look at one process."""

    who: str
    pid: int
    at: float
    rss: int
    fds: int
    tasks: int
    load: float  # the machine's 1-minute load average when taken

    @classmethod
    def of_this_process(cls, who: str) -> Sample:
        me = psutil.Process()
        return cls(
            who,
            me.pid,
            time.time(),
            me.memory_info().rss,
            me.num_fds(),
            len(asyncio.all_tasks()),
            os.getloadavg()[0],
        )

    def line(self) -> str:
        return (
            f"{self.who} {self.pid} {self.at:.3f} {self.rss} {self.fds} {self.tasks} "
            f"{self.load:.2f}"
        )

    @classmethod
    def parse(cls, line: str) -> Sample:
        who, pid, at, rss, fds, tasks, load = line.split()
        return cls(who, int(pid), float(at), int(rss), int(fds), int(tasks), float(load))


def read_samples(path: os.PathLike[str] | str) -> list[Sample]:
    with open(path) as lines:
        return [Sample.parse(line) for line in lines if line.strip()]


@dataclass(frozen=True)
class Judgement:
    """One process's run after warm-up: first third against last third."""

    who: str
    samples: int
    rss_first: float
    rss_last: float
    fds_first: int
    fds_last: int
    tasks_first: int
    tasks_last: int

    @property
    def rss_growth(self) -> float:
        return self.rss_last / self.rss_first - 1

    def failures(self) -> list[str]:
        found = []
        if self.rss_growth >= RSS_GROWTH:
            found.append(
                f"{self.who}: resident memory grew {self.rss_growth:.1%} "
                f"({self.rss_first / 1e6:.1f} -> {self.rss_last / 1e6:.1f} MB), "
                f"not under {RSS_GROWTH:.0%}"
            )
        if self.fds_last > self.fds_first + FD_MARGIN:
            found.append(
                f"{self.who}: open file descriptors rose from at most {self.fds_first} to "
                f"{self.fds_last} (margin {FD_MARGIN})"
            )
        if self.tasks_last > self.tasks_first + TASK_MARGIN:
            found.append(
                f"{self.who}: asyncio tasks rose from at most {self.tasks_first} to "
                f"{self.tasks_last} (margin {TASK_MARGIN})"
            )
        return found

    def row(self) -> str:
        return (
            f"| {self.who} | {self.samples} | {self.rss_first / 1e6:.1f} | "
            f"{self.rss_last / 1e6:.1f} | {self.rss_growth:+.1%} | {self.fds_first} | "
            f"{self.fds_last} | {self.tasks_first} | {self.tasks_last} |"
        )


HEADER = (
    "| process | samples judged | RSS MB, first third (median) | last third (median) | "
    "growth | fds, first third (max) | last third (max) | tasks, first third (max) | "
    "last third (max) |\n|---|---|---|---|---|---|---|---|---|"
)


def judge(who: str, samples: Iterable[Sample], since: float) -> Judgement:
    """Judge the samples taken at ``since`` or later (the end of the warm-up)."""
    kept = sorted((s for s in samples if s.at >= since), key=lambda s: s.at)
    if len(kept) < 3:
        raise AssertionError(f"{who}: only {len(kept)} samples after the warm-up; need 3")
    third = len(kept) // 3
    first, last = kept[:third], kept[-third:]
    return Judgement(
        who=who,
        samples=len(kept),
        rss_first=statistics.median(s.rss for s in first),
        rss_last=statistics.median(s.rss for s in last),
        fds_first=max(s.fds for s in first),
        fds_last=max(s.fds for s in last),
        tasks_first=max(s.tasks for s in first),
        tasks_last=max(s.tasks for s in last),
    )


def timeline(samples: Iterable[Sample], start: float, every: float = 60.0) -> str:
    """One row a minute (the last sample of each), for reading a run afterwards."""
    by_minute: dict[tuple[str, int], Sample] = {}
    for s in sorted(samples, key=lambda s: s.at):
        by_minute[(s.who, int((s.at - start) // every))] = s
    rows = [
        "| minute | process | RSS MB | fds | tasks | load (1 min) |",
        "|---|---|---|---|---|---|",
    ]
    for (who, minute), s in sorted(by_minute.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        rows.append(
            f"| {minute} | {who} | {s.rss / 1e6:.1f} | {s.fds} | {s.tasks} | {s.load:.1f} |"
        )
    return "\n".join(rows)
