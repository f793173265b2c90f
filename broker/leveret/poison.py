"""Running a task that keeps coming back alone in its worker process.

RabbitMQ counts every return of an unsettled delivery (``x-delivery-count``) and a
quorum queue dead-letters a message past its delivery limit. When a task kills its
worker, everything that worker was running comes back with it, counted alike, and
is handed out together again: healthy tasks would reach the limit beside the
poison. So a delivery that has come back twice (once, if the limit is 1) runs
alone: what is running finishes first, and deliveries that arrive meanwhile wait,
unstarted, until it is over. If it kills the process, the waiting ones come back
with one return more, but none of them had reached the threshold, so none can be
pushed past the limit by it.

One such delivery at a time per process: another one that arrives meanwhile is put
back in the queue after a short delay, its count carried in a header, rather than
held (it would be counted for a crash it did not cause).

Consumers are not cancelled to hold deliveries back: on a quorum queue, deliveries
already on their way to a cancelled consumer are returned, and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from leveret.amqp import Delivery
from leveret.amqp.consume import Settle
from leveret.errors import DeliveryLimitReached, PublishError
from leveret.outcomes import Outcomes
from leveret.retry import DeadReason

log = logging.getLogger(__name__)

#: Runs one delivery that came back ``returns`` times (0: a first delivery).
Run = Callable[[Delivery, str, int], Awaitable[Settle]]

#: Returns before a delivery runs alone. One return is common and innocent (a lost
#: connection, a rolling restart); a second in a row is what a poison's neighbours see.
ALONE_AFTER = 2

#: How long a delivery waiting its turn to run alone is parked before it comes back.
PUT_BACK_SECONDS = 1.0

#: A lone delivery starts only after this long without a new delivery arriving. The
#: broker keeps sending into the prefetch window; what is still on its way when the
#: process dies is counted too, and a poison's former neighbours follow it closely.
QUIET_SECONDS = 0.1


def runs_alone(returns: int, delivery_limit: int | None) -> bool:
    """Whether a delivery that came back ``returns`` times must run alone."""
    threshold = ALONE_AFTER if delivery_limit is None else max(1, min(ALONE_AFTER, delivery_limit))
    return returns >= threshold


class Isolation:
    """The gate of one worker process: at most one delivery runs alone at a time.

    Every other delivery calls ``enter`` before it starts and ``leave`` when it is
    over; while ``busy``, ``enter`` waits. Work that must not wait (putting a delivery
    back) calls ``begin`` instead. ``settle`` makes sure RabbitMQ has processed the
    acknowledgements of everything that ended, before the lone delivery starts: a
    process killed right after would otherwise lose them, and return those deliveries
    with one more count.
    """

    def __init__(
        self, stopping: asyncio.Event, settle: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self._stopping = stopping
        self._settle = settle
        self.busy = False
        self.running = 0
        #: ``time.monotonic()`` of the latest delivery (``arrived``).
        self.last_arrival = 0.0
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()

    def arrived(self) -> None:
        """Note a delivery's arrival (every one, before anything else is done with it)."""
        self.last_arrival = time.monotonic()

    async def enter(self) -> bool:
        """Count a delivery as running, once no delivery runs alone; False if stopping."""
        while self.busy and not self._stopping.is_set():
            await self._first(self._open)
        if self._stopping.is_set():
            return False
        self.begin()
        return True

    def begin(self) -> None:
        """Count work as running without waiting for the gate."""
        self.running += 1
        self._idle.clear()

    def leave(self) -> None:
        self.running -= 1
        if not self.running:
            self._idle.set()

    @asynccontextmanager
    async def alone(self) -> AsyncIterator[bool]:
        """Hold new deliveries back and wait until nothing else runs; yields False if
        the worker is stopping instead."""
        if self.busy:
            raise RuntimeError("a delivery is already running alone in this process")
        self.busy = True
        self._open.clear()
        try:
            while not self._stopping.is_set():
                while self.running and not self._stopping.is_set():
                    await self._first(self._idle)
                quiet = self.last_arrival + QUIET_SECONDS - time.monotonic()
                if quiet > 0:
                    await self._first(self._stopping, quiet)
                    continue
                if self._settle is not None:
                    await self._settle()
                if not self.running and time.monotonic() - self.last_arrival >= QUIET_SECONDS:
                    break  # everything else ended, is acknowledged, or waits unstarted
            yield not self._stopping.is_set()
        finally:
            self.busy = False
            self._open.set()

    async def _first(self, event: asyncio.Event, seconds: float | None = None) -> None:
        """Wait for ``event`` or the worker stopping, whichever comes first."""
        waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._stopping.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()


class PoisonGuard:
    """Decides what to do with each delivery: run it in turn, run it alone, put it
    back, or dead-letter it past its queue's delivery limit."""

    def __init__(
        self,
        gate: Isolation,
        outcomes: Outcomes,
        delivery_limits: dict[str, int],
        run: Run,
    ) -> None:
        self.gate = gate
        self._outcomes = outcomes
        self._limits = delivery_limits
        self._run = run
        #: Deliveries that came back unsettled, by (queue, what was done): ``ran-alone``,
        #: ``put-back`` (to wait for its turn) or ``counted`` (a classic queue's).
        self.returned: Counter[tuple[str, str]] = Counter()

    async def in_turn(self, delivered: Delivery, queue: str, returns: int) -> Settle:
        """Run a delivery once no delivery runs alone in this process."""
        gate = self.gate
        if not gate.busy:
            gate.begin()  # the common case, without a coroutine
        elif not await gate.enter():
            return Settle.REQUEUE  # stopping
        try:
            return await self._run(delivered, queue, returns)
        finally:
            gate.leave()

    async def returned_delivery(
        self, delivered: Delivery, queue: str, returns: int, uncounted: bool
    ) -> Settle:
        """A delivery that came back unsettled: stop it at the limit, or run it alone.

        A redelivery the broker did not count (a classic queue's) is put back first, as a
        copy carrying the count: a second crash would otherwise look like the first.
        """
        limit = self._limits.get(queue)
        if limit is not None and returns > limit:
            over = DeliveryLimitReached(
                f"the task came back unsettled {returns} times (its worker died or lost its "
                f"connection before it ended), over the delivery limit of {limit} of queue "
                f"{queue!r}"
            )
            return await self._outcomes.reject(delivered, queue, DeadReason.DELIVERY_LIMIT, over)
        if uncounted:
            return await self._put_back(delivered, queue, returns, after=0.0, action="counted")
        if not runs_alone(returns, limit):
            return await self.in_turn(delivered, queue, returns)
        if self.gate.busy:
            return await self._put_back(delivered, queue, returns)
        log.info(
            "task %s %s came back unsettled %d times: running it alone",
            delivered.header.properties.message_type,
            delivered.header.properties.message_id,
            returns,
        )
        async with self.gate.alone() as alone:
            if alone:
                self.returned[(queue, "ran-alone")] += 1
                return await self._run(delivered, queue, returns)
        return await self._put_back(delivered, queue, returns)

    async def _put_back(
        self,
        delivered: Delivery,
        queue: str,
        returns: int,
        *,
        after: float = PUT_BACK_SECONDS,
        action: str = "put-back",
    ) -> Settle:
        """Requeue a copy that carries the return count, without counting a return."""
        self.gate.begin()  # the lone delivery starts once this one is settled
        try:
            await self._outcomes.put_back(delivered, queue, returns, after)
        except PublishError as exc:
            log.warning(
                "could not put task %s back (%s); requeueing it",
                delivered.header.properties.message_id,
                exc,
            )
            return Settle.REQUEUE
        finally:
            self.gate.leave()
        self.returned[(queue, action)] += 1
        return Settle.ACK
