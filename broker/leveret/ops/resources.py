"""What a process holds, read when scraped: resident memory, open files, event-loop tasks.

A leak in a long-running worker shows first as one of these creeping up: memory that
a reconnect or a redelivery never gives back, a socket per lost connection, a task
per delivery that never ends. The first two are the standard ``process_*`` series
(from ``prometheus_client``'s own reader of ``/proc``, so they match every other
Python exporter; absent where there is no ``/proc``); the third is ours.

Each is a sum over processes, so ``merge`` of a ``--processes`` worker adds them up
like the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

#: The standard series kept from ``ProcessCollector``: the ones that add up across
#: processes (a start time or a limit does not).
KEPT = frozenset({"process_resident_memory_bytes", "process_open_fds"})


class ProcessResources(Collector):
    """Resident memory, open file descriptors, and tasks alive on the running loop."""

    def __init__(self) -> None:
        self._process = ProcessCollector(registry=None)

    def collect(self) -> Iterable[Metric]:
        for metric in self._process.collect():
            if metric.name in KEPT:
                yield metric
        tasks = GaugeMetricFamily(
            "leveret_event_loop_tasks",
            "asyncio tasks alive on the event loop that answered the scrape: flat in a "
            "healthy worker, a steady climb is a leak.",
            labels=[],
        )
        count = loop_tasks()
        if count is not None:
            tasks.add_metric([], count)
        yield tasks


def loop_tasks() -> int | None:
    """Tasks not yet done on the running loop; None when no loop runs here."""
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:
        return None
