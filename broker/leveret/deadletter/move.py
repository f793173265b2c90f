"""Taking dead letters out of a queue - replayed or purged - so that a crash loses none.

Each message is handled once, in queue order:

    matches    copy published (replay) -> confirmed -> dead letter acked
               nothing published (purge)            -> dead letter acked
    no match   exact copy published to the tail of the same dead-letter queue
               -> confirmed -> original acked

A SIGKILL at any moment leaves every message either not yet acknowledged (the broker
gives it back) or already confirmed elsewhere: at worst a message is both replayed
and still dead-lettered, or twice in the dead-letter queue, never gone. Such
duplicates are bounded by the prefetch window.

Why non-matching messages go to the tail instead of staying unacknowledged until
the end: unacknowledged messages hold the consumer's prefetch, so keeping 100,000
of them needs a prefetch (and client memory) of 100,000 or a browse-style consumer
per window; they would also stay out of reach of other consumers for the whole run,
hit the broker's ``consumer_timeout`` (30 min) on long runs, and on a quorum queue
every return counts as a delivery (RabbitMQ 4.0-4.2 drop a message after 20). A
confirmed copy at the tail costs one publish per message, keeps memory to one
window, and changes only the order: kept messages end up behind those that arrived
during the run.

The run stops after as many messages as the queue held when it began, so copies put
back at the tail, and dead letters that arrive meanwhile (even a replayed task that
failed again), are not seen twice: no endless loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from leveret.amqp.browse import IDLE, STALL, until_returned
from leveret.amqp.publish import ConfirmPublisher
from leveret.amqp.reader import CHANNEL_ERRORS, QueueReader
from leveret.amqp.types import Connection, Delivery, Properties
from leveret.deadletter.filters import Filter
from leveret.deadletter.letter import DeadLetter

log = logging.getLogger(__name__)

#: Where a selected dead letter's copy goes: (exchange, routing key, properties), or
#: None to drop it (purge).
Target = tuple[str, str, Properties] | None


@dataclass
class MoveReport:
    """How one queue's run went; updated as it goes (progress callbacks see it)."""

    queue: str
    total: int = 0  # ready in the dead-letter queue when the run began
    scanned: int = 0  # looked at
    matched: int = 0  # selected by the filter (and the limit)
    moved: int = 0  # replayed or purged, acknowledged
    kept: int = 0  # not selected, put back at the tail
    error: str | None = None


class RateLimit:
    """At most ``per_second`` selected messages a second, spaced evenly."""

    def __init__(self, per_second: float) -> None:
        if per_second <= 0:
            raise ValueError("rate must be above 0")
        self._interval = 1.0 / per_second
        self._next = time.monotonic()

    async def wait(self) -> None:
        now = time.monotonic()
        at = max(self._next, now)
        self._next = at + self._interval
        if at > now:
            await asyncio.sleep(at - now)


class Mover:
    """One run over one dead-letter queue."""

    def __init__(
        self,
        *,
        connection: Connection,
        publisher: ConfirmPublisher,
        queue: str,
        dead_queue: str,
        where: Filter,
        target: Callable[[DeadLetter], Target],
        user: str | None,
        limit: int | None = None,
        rate: float | None = None,
        prefetch: int = 500,
        on_progress: Callable[[MoveReport], None] | None = None,
    ) -> None:
        self.report = MoveReport(queue)
        self._connection = connection
        self._publisher = publisher
        self._queue = queue
        self._dead_queue = dead_queue
        self._where = where
        self._target = target
        self._user = user
        self._limit = limit
        self._rate = RateLimit(rate) if rate else None
        self._prefetch = max(prefetch, 1)
        self._on_progress = on_progress
        self._reader: QueueReader | None = None
        self._stopping = False
        self._in_flight = 0
        self._done = asyncio.Event()
        self._busy_ids: dict[str, asyncio.Event] = {}

    async def run(self) -> MoveReport:
        report = self.report
        reader = await QueueReader.open(self._connection)
        self._reader = reader
        try:
            report.total = await reader.ready(self._dead_queue)
            if report.total == 0 or self._limit == 0:
                return report
            consumer_tag = await reader.consume(
                self._dead_queue, self._on_message, prefetch=min(self._prefetch, report.total)
            )
            await self._wait(reader)
            if not reader.is_closed:
                await reader.cancel(consumer_tag)
        except CHANNEL_ERRORS as exc:
            report.error = report.error or f"lost the channel to RabbitMQ ({exc})"
        finally:
            # Whatever was delivered but not handled goes back to the queue.
            await reader.close()
        if report.total and not report.error:
            await until_returned(self._connection, self._dead_queue, report.total - report.moved)
        return report

    async def _wait(self, reader: QueueReader) -> None:
        """Until every message counted at the start is handled, or the run stops."""
        last_scanned, quiet = -1, 0.0
        while not self._done.is_set():
            try:
                await asyncio.wait_for(self._done.wait(), IDLE)
                return
            except TimeoutError:
                pass
            if reader.is_closed:
                self.report.error = self.report.error or "the broker closed the channel"
                return
            if self.report.scanned != last_scanned or self._in_flight:
                last_scanned, quiet = self.report.scanned, 0.0
                continue
            quiet += IDLE
            ready = await reader.ready(self._dead_queue)
            if not ready:
                return  # another consumer took the rest
            if quiet >= STALL:
                self.report.error = (
                    f"no message from {self._dead_queue} for {quiet:.0f} s although "
                    f"{ready} are ready"
                )
                return

    def _finish_if_idle(self) -> None:
        report = self.report
        if (self._stopping or report.scanned >= report.total) and self._in_flight == 0:
            self._done.set()

    async def _on_message(self, delivered: Delivery) -> None:
        report = self.report
        if self._stopping or report.scanned >= report.total:
            return  # not part of this run: returned to the queue when the channel closes
        report.scanned += 1
        letter = DeadLetter.parse(self._queue, delivered.body, delivered.header.properties)
        selected = self._where.matches(letter)
        if selected:
            report.matched += 1
            if self._limit is not None and report.matched >= self._limit:
                self._stopping = True  # handle this one, leave the rest in place
        self._in_flight += 1
        try:
            if selected:
                if self._rate is not None:
                    await self._rate.wait()
                target = self._target(letter)
                if target is not None:
                    await self._publish(*target, body=delivered.body)
            else:
                await self._publish(
                    "", self._dead_queue, letter.kept_properties(self._user), body=delivered.body
                )
            reader = self._reader
            assert reader is not None
            await reader.ack(delivered)
            if selected:
                report.moved += 1
            else:
                report.kept += 1
        except Exception as exc:
            # Not acknowledged: the broker keeps it. Stop rather than skip, so nothing is
            # silently left behind while the rest moves on.
            self._stopping = True
            if report.error is None:
                report.error = f"dead letter {letter.id}: {type(exc).__name__}: {exc}"
                log.error("stopping: could not move dead letter %s: %s", letter.id, exc)
        finally:
            self._in_flight -= 1
            if self._on_progress is not None:
                self._on_progress(report)
            self._finish_if_idle()

    async def _publish(
        self, exchange: str, routing_key: str, props: Properties, *, body: bytes
    ) -> None:
        """A confirmed, mandatory publish, one at a time per message id.

        A returned (unroutable) message is matched to its publish by message_id:
        two copies with one id in flight at once could be confused, and the one that
        went nowhere reported as confirmed.
        """
        message_id = props.message_id
        if not message_id:
            await self._publisher.publish(exchange, routing_key, body, props)
            return
        while (busy := self._busy_ids.get(message_id)) is not None:
            await busy.wait()
        self._busy_ids[message_id] = done = asyncio.Event()
        try:
            await self._publisher.publish(exchange, routing_key, body, props)
        finally:
            del self._busy_ids[message_id]
            done.set()
