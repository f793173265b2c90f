"""What the scheduler tests share: the queue as a ledger of firings, and cleanup.

Every confirmed send of a schedule waits in its task queue (no worker runs it), so
the queue's messages are exactly what was fired: ``Ledger`` counts each slot's
firings from their task ids (``name@slot``) and the lateness of each from its
``leveret-published-at`` header.
"""

from __future__ import annotations

import contextlib
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiormq

from leveret.scheduler.runner import lease_queue, status_queue
from leveret.scheduler.timing import Timing
from tests.support.amqp import admin_channel, peek


@dataclass
class Firing:
    schedule: str
    slot: datetime
    task_id: str
    published_at: float | None  # epoch seconds


async def firings(url: str, queue: str) -> list[Firing]:
    """Every schedule firing waiting in ``queue`` (the queue is left as it was)."""
    found = []
    for message in await peek(url, queue):
        props = message.header.properties
        task_id = str(props.message_id)
        name, _, slot = task_id.partition("@")
        if slot.startswith("run-"):
            continue
        published = (props.headers or {}).get("leveret-published-at")
        at = int(published) / 1000 if isinstance(published, int | str) else None
        found.append(
            Firing(
                name,
                datetime.fromisoformat(slot),
                task_id,
                at,
            )
        )
    return found


@dataclass
class Ledger:
    """Slots of one schedule from its first firing to its last: each fired how often."""

    schedule: str
    counts: Counter[datetime] = field(default_factory=Counter)
    expected: list[datetime] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, schedule: str, timing: Timing, fired: list[Firing]) -> Ledger:
        mine = [f for f in fired if f.schedule == schedule]
        ledger = cls(schedule, Counter(f.slot for f in mine))
        if mine:
            first, last = min(ledger.counts), max(ledger.counts)
            ledger.expected = [first, *timing.between(first, last)]
        ledger.lateness = sorted(
            f.published_at - f.slot.timestamp() for f in mine if f.published_at is not None
        )
        return ledger

    @property
    def missing(self) -> list[datetime]:
        return [slot for slot in self.expected if not self.counts[slot]]

    @property
    def duplicates(self) -> dict[datetime, int]:
        return {slot: n - 1 for slot, n in self.counts.items() if n > 1}

    def percentile(self, share: float) -> float:
        if not self.lateness:
            return float("nan")
        if len(self.lateness) == 1:
            return self.lateness[0]
        return statistics.quantiles(self.lateness, n=100, method="inclusive")[
            min(int(share * 100), 99) - 1
        ]

    def summary(self) -> str:
        dups = sum(self.duplicates.values())
        return (
            f"{self.schedule}: {len(self.expected)} slots, {len(self.missing)} missing, "
            f"{dups} duplicates {sorted(s.isoformat() for s in self.duplicates)}, lateness "
            f"p50 {self.percentile(0.5) * 1000:.0f} ms / p99 {self.percentile(0.99) * 1000:.0f} ms"
        )


def span(ledger: Ledger) -> timedelta:
    return ledger.expected[-1] - ledger.expected[0] if ledger.expected else timedelta(0)


async def delete_scheduler_queues(url: str, namespace: str) -> None:
    """The lease and status queues a scheduler declared under ``namespace``."""
    async with admin_channel(url) as channel:
        for queue in (lease_queue(namespace), status_queue(namespace)):
            with contextlib.suppress(aiormq.exceptions.AMQPError):
                await channel.queue_delete(queue)
