"""Strict priorities on queues of any type: one queue per priority band, drained in order.

A queue with ``priority_bands`` is one work queue per band. Each band has a consumer
on the worker; a band's consumer takes deliveries only while every higher band is
idle: nothing of it running here and nothing ready in its queue. A delivery on a
higher band pauses the lower ones at once; a periodic look at the higher queues'
depth (other workers may be taking their messages) resumes them.

The cost: a lower band's deliveries already prefetched when a higher one arrives
still run (up to the worker's concurrency per band), and a lower band waits as long
as higher bands have work: strict priority, not fairness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from leveret.amqp.channels import CHANNEL_GONE
from leveret.amqp.consume import Process, QueueConsumer, Settle
from leveret.amqp.types import Delivery

log = logging.getLogger(__name__)

#: Seconds between looks at the higher bands' depth while a lower band is paused.
POLL = 0.2
#: Seconds ``stop`` lets a look in progress finish before it cancels it.
STOP_WAIT = 10.0


class BandGate:
    """Lets each band of one queue consume only while every higher band is idle."""

    def __init__(self, bands: list[str], consumer: Callable[[str], QueueConsumer | None]) -> None:
        self.bands = bands  # short names, highest band first
        self._consumer = consumer
        self._busy = dict.fromkeys(bands, 0)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def wrap(self, band: str, process: Process) -> Process:
        """``process`` for ``band``'s consumer, telling the gate when work starts and ends."""

        async def gated(delivered: Delivery) -> Settle:
            self._busy[band] += 1
            if any(self._active(lower) for lower in self._below(band)):
                self._wake.set()
            try:
                return await process(delivered)
            finally:
                self._busy[band] -= 1
                if not self._busy[band]:
                    self._wake.set()

        return gated

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop between two looks, never in the middle of one.

        Cancelling a call on a consumer's channel makes aiormq close that channel, and
        with it the acks of the deliveries still running there.
        """
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), STOP_WAIT)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _below(self, band: str) -> list[str]:
        return self.bands[self.bands.index(band) + 1 :]

    def _active(self, band: str) -> bool:
        consumer = self._consumer(band)
        return consumer is not None and consumer.subscribed and not consumer.paused

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._settle_bands()
            except CHANNEL_GONE as exc:
                log.debug("priority bands: could not look at the queues (%s)", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL)
            self._wake.clear()

    async def _settle_bands(self) -> None:
        """Open bands from the top down to the first one with work; pause the rest."""
        open_to = len(self.bands) - 1
        for i, band in enumerate(self.bands[:-1]):
            consumer = self._consumer(band)
            if self._busy[band] or (consumer is not None and await consumer.ready_count()):
                open_to = i
                break
        for i, band in enumerate(self.bands):
            consumer = self._consumer(band)
            if consumer is None or not consumer.subscribed:
                continue
            if i <= open_to:
                await consumer.resume()
            else:
                await consumer.pause()
