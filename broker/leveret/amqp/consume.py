"""Consuming one queue on its own channel, acknowledging in as few frames as it can.

Every delivery is settled only after the worker says so. Finished deliveries are
acknowledged once per event-loop turn: everything below the oldest still-running
delivery with one ``multiple=True`` ack, anything above it one by one, so a slow task
never holds back the acks of fast ones (nor their prefetch slots). The ack frames go
straight onto the connection's write queue (through ``leveret.amqp.compat``), or through
``basic_ack`` where that queue is not what compat expects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from enum import Enum

import aiormq
import pamqp.frame
from aio_pika.abc import AbstractConnection
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic

from leveret.amqp import compat
from leveret.amqp.channels import CHANNEL_GONE, close_quietly, retrieve

log = logging.getLogger(__name__)


class Settle(Enum):
    """What to tell the broker about a delivery once the worker is done with it."""

    ACK = "ack"
    REQUEUE = "requeue"


Process = Callable[[DeliveredMessage], Awaitable[Settle]]


class Acker:
    """Coalesces acknowledgements of finished deliveries on one channel."""

    def __init__(self, channel: AbstractChannel) -> None:
        self._channel = channel
        self._writer = compat.frame_writer(channel)
        self._running: set[int] = set()
        self._finished: list[int] = []
        self._flush_scheduled = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def started(self, tag: int) -> None:
        self._running.add(tag)
        self._idle.clear()

    def forget(self, tag: int) -> None:
        """The delivery will not be settled here (its channel is gone)."""
        self._running.discard(tag)
        if not self._running:
            self._idle.set()

    def finished(self, tag: int, settle: Settle) -> None:
        self._running.discard(tag)
        if not self._running:
            self._idle.set()
        if settle is Settle.REQUEUE:
            self._send(Basic.Nack(delivery_tag=tag, multiple=False, requeue=True))
            return
        self._finished.append(tag)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._finished:
            return
        oldest = min(self._running) if self._running else None
        finished, self._finished = self._finished, []
        if oldest is None:
            self._send(Basic.Ack(delivery_tag=max(finished), multiple=True))
            return
        below = [t for t in finished if t < oldest]
        if below:
            self._send(Basic.Ack(delivery_tag=max(below), multiple=True))
        for tag in finished:
            if tag > oldest:
                self._send(Basic.Ack(delivery_tag=tag, multiple=False))

    def _send(self, frame: Basic.Ack | Basic.Nack) -> None:
        channel = self._channel
        if channel.is_closed:
            return  # the broker requeues whatever this channel had unacked
        # One frame straight onto the connection's write queue: no task, no drain wait;
        # basic_ack() would cost a coroutine per ack on the hot path.
        writer = self._writer
        if writer is None or not writer.write((pamqp.frame.marshal(frame, channel.number),)):
            asyncio.get_running_loop().create_task(self._send_slowly(frame))

    async def _send_slowly(self, frame: Basic.Ack | Basic.Nack) -> None:
        try:
            if isinstance(frame, Basic.Ack):
                await self._channel.basic_ack(frame.delivery_tag, frame.multiple, wait=False)
            else:
                await self._channel.basic_nack(frame.delivery_tag, requeue=True, wait=False)
        except aiormq.exceptions.ChannelInvalidStateError:
            pass

    async def wait_idle(self, seconds: float) -> bool:
        """Wait until no delivery is running; False if ``seconds`` passed first."""
        try:
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


class QueueConsumer:
    """One consumer on one queue: its channel, QoS, acks, and whether it still runs."""

    def __init__(self, queue: str, prefetch: int, process: Process) -> None:
        self.queue = queue
        self.prefetch = prefetch
        self._process = process
        self.channel: AbstractChannel | None = None
        self.acker: Acker | None = None
        self.consumer_tag: str | None = None
        #: Channel open, deliveries held back on purpose (see ``pause``).
        self.paused = False
        #: Set when the broker cancels this consumer or its channel closes.
        self.lost = asyncio.Event()

    @property
    def subscribed(self) -> bool:
        """Consuming, or paused on purpose on a live channel."""
        return (self.consumer_tag is not None or self.paused) and not self.lost.is_set()

    async def start(self, connection: AbstractConnection, *, paused: bool = False) -> None:
        wrapper = await connection.channel(publisher_confirms=False)
        channel = await wrapper.get_underlay_channel()
        self.channel = channel
        self.acker = Acker(channel)
        self.lost = asyncio.Event()
        await channel.basic_qos(prefetch_count=self.prefetch, global_=False)
        channel.on_consumer_cancel_callbacks.add(self._on_cancel)
        channel.closing.add_done_callback(lambda _: self.lost.set())
        if paused:
            self.paused = True
            return
        ok = await channel.basic_consume(self.queue, self._on_message)
        self.consumer_tag = ok.consumer_tag

    async def pause(self) -> None:
        """Take no more deliveries for now; those already here still run and are acked."""
        if self.paused:
            return
        self.paused = True
        await self.stop_consuming()
        self.consumer_tag = None

    async def resume(self) -> None:
        """Take deliveries again after ``pause``."""
        channel = self.channel
        if not self.paused or channel is None or channel.is_closed:
            return
        self.paused = False
        try:
            ok = await channel.basic_consume(self.queue, self._on_message)
        except BaseException:
            self.paused = True
            raise
        self.consumer_tag = ok.consumer_tag

    async def ready_count(self) -> int:
        """Messages waiting in the queue, not yet delivered to any consumer."""
        channel = self.channel
        if channel is None or channel.is_closed:
            return 0
        # aiormq closes a channel whose RPC is cancelled or times out, and this channel
        # holds unacknowledged deliveries: a slow answer must not cost them, so the
        # call itself is never cancelled, only no longer waited for.
        declare = asyncio.ensure_future(channel.queue_declare(self.queue, passive=True))
        declare.add_done_callback(retrieve)
        ok = await asyncio.wait_for(asyncio.shield(declare), 5)
        return int(ok.message_count or 0)

    def _on_cancel(self, _frame: object) -> None:
        log.warning("the broker cancelled the consumer on %s; it will be re-subscribed", self.queue)
        self.lost.set()

    async def _on_message(self, delivered: DeliveredMessage) -> None:
        acker = self.acker
        assert acker is not None
        tag: int = delivered.delivery.delivery_tag  # type: ignore[union-attr,assignment]
        acker.started(tag)
        try:
            settle = await self._process(delivered)
        except asyncio.CancelledError:
            acker.forget(tag)  # the channel is closing: the broker requeues it
            raise
        except Exception:
            log.exception("processing a message from %s failed; requeueing it", self.queue)
            settle = Settle.REQUEUE
        acker.finished(tag, settle)

    async def stop_consuming(self) -> None:
        """Ask the broker for no more deliveries; running ones carry on."""
        channel, tag = self.channel, self.consumer_tag
        if channel is None or tag is None or channel.is_closed:
            return
        try:
            await channel.basic_cancel(tag, timeout=5)
        except CHANNEL_GONE:
            log.debug("basic.cancel on %s failed", self.queue, exc_info=True)

    async def close(self) -> None:
        """Close the channel: the broker requeues whatever is still unacknowledged."""
        if self.acker is not None:
            self.acker.flush()
        if self.channel is not None:
            await close_quietly(self.channel)
