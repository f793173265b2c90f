"""Reading a queue without taking anything out of it.

AMQP has no "peek". A browse consumes and never acknowledges: every message it has
seen stays unacknowledged on its channel, and closing the channel hands them all
back to the queue (a crash or SIGKILL does the same). To see each message once, it
stops after as many messages as the queue held when it began; messages arriving
meanwhile are left for the next look.

A consumer receives no more than its prefetch of unacknowledged messages, so the
browse reads in windows: one consumer per window, cancelled once it has delivered
its window (its messages stay unacknowledged on the channel), then the next. Only
one window is ever in this process's memory; the broker holds the rest, as it
already did.

Side effects to know: a classic queue gets its messages back in their places; a
quorum queue puts returned messages first, in chunks, and counts each return in
``x-delivery-count`` (RabbitMQ 4.0-4.2 drop a message from a quorum queue after
20 returns unless the queue's delivery limit is raised - see docs/dead-letters.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

from leveret.amqp.reader import CHANNEL_ERRORS, QueueReader
from leveret.amqp.types import Connection, Delivery

log = logging.getLogger(__name__)

#: Messages per window: what one browse holds in memory at most.
WINDOW = 500
#: Seconds without a delivery before asking the broker whether any message is left.
IDLE = 2.0
#: Seconds without progress, while the broker says messages are ready, before giving up.
STALL = 30.0
#: Seconds to wait, at most, for a quorum queue to take back what a browse held, when
#: the queue has no consumer that could have taken some meanwhile (a loaded node takes
#: seconds), and when it has one.
RETURN_WAIT = 15.0
RETURN_WAIT_CONSUMED = 2.0


async def browse(
    connection: Connection, queue: str, *, window: int = WINDOW
) -> AsyncGenerator[Delivery, None]:
    """Each message the queue held at the start, once, in order; none is removed.

    Close the iterator (``contextlib.aclosing``) when done early: the messages come
    back when its channel closes.
    """
    reader = await QueueReader.open(connection)
    total = 0
    try:
        total = await reader.ready(queue)
        inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        seen = 0
        while seen < total:
            quota = min(window, total - seen)
            consumer_tag = await reader.consume(queue, inbox.put, prefetch=quota)
            got = 0
            while got < quota:
                delivered = await _next(reader, queue, inbox)
                if delivered is None:
                    return
                got += 1
                seen += 1
                yield delivered
            await reader.cancel(consumer_tag)
    finally:
        await reader.close()
        if total:
            await until_returned(connection, queue, total)


async def until_returned(connection: Connection, queue: str, total: int) -> None:
    """Wait (briefly) until ``queue`` shows ``total`` ready messages again.

    Messages a closed channel held come back to a classic queue before the close
    completes, to a quorum queue a moment later; an operation started at once (a
    replay after a listing, the next grouping scan) would count the queue short and
    miss some. Without a consumer on the queue nothing else can take them, so a short
    count means they are still on their way; with one, they may be gone for good.
    """
    reader = await QueueReader.open(connection)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            ready, consumers = await reader.stats(queue)
            if ready >= total:
                return
            waited = loop.time() - started
            if waited >= (RETURN_WAIT_CONSUMED if consumers else RETURN_WAIT):
                log.debug("%s shows %d of the %d messages a browse gave back", queue, ready, total)
                return
            await asyncio.sleep(0.01)
    except CHANNEL_ERRORS:
        pass  # gone or unreachable: nothing to wait for
    finally:
        await reader.close()


async def _next(reader: QueueReader, queue: str, inbox: asyncio.Queue[Delivery]) -> Delivery | None:
    """The next delivery, or None once the broker has nothing left for us."""
    waited = 0.0
    while True:
        try:
            return await asyncio.wait_for(inbox.get(), IDLE)
        except TimeoutError:
            waited += IDLE
        ready = await reader.ready(queue)
        if not ready:
            return None  # someone else took the rest
        if waited >= STALL:
            log.warning(
                "no message from %s for %.0f s although %d are ready; stopping the browse",
                queue,
                waited,
                ready,
            )
            return None
