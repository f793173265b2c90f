"""Confirmed, mandatory publishing that never reports an unconfirmed message as sent.

All publishes share one confirm channel and wait for their own confirms side by
side. The messages published in one event-loop turn are written as one frame
(``Batcher``): aiormq's ``basic_publish`` holds the channel lock until each message
has been handed to the socket, which lets only one message through per loop turn
and made ``send_many`` slower than a plain aio-pika loop. (The batcher registers
confirms in the channel's private state, through ``leveret.amqp.compat``; where that
state is not what compat expects, ``basic_publish`` is used.) After a failure the
channel that failed is set aside and a fresh one is used (after a quorum leader failover one
channel was seen nacking every publish for minutes while fresh ones worked), within
a bounded deadline; then the error is raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

import aiormq
from aiormq.abc import AbstractChannel, ConfirmationFrameType
from pamqp.commands import Basic

from leveret.amqp import compat, frames_out
from leveret.amqp.connection import CONNECTION_ERRORS, Connector
from leveret.amqp.topology import access_refused
from leveret.errors import BrokerUnavailable, NotConfirmed, Unroutable
from leveret.settings import Settings

log = logging.getLogger(__name__)

#: Failures after which a fresh channel may succeed (CancelledError: see below).
RETRYABLE: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncio.CancelledError)


class Batcher:
    """Writes the publishes of one loop turn on one confirm channel as a single frame.

    It does what ``basic_publish`` does (the next delivery tag, a confirmation future
    the channel resolves on ack, nack, return or close, the message id for returns of
    mandatory messages) but without waiting for the socket per message. Delivery tags
    are taken in the order the messages are written, as the broker numbers them: every
    publish on this channel must go through here.
    """

    def __init__(self, channel: AbstractChannel, writer: compat.ConfirmWriter) -> None:
        self.channel = channel
        self._writer = writer
        self._frames: list[bytes] = []
        self._scheduled = False

    @classmethod
    def open(cls, channel: AbstractChannel) -> Batcher | None:
        """A batcher for ``channel``, or None if its aiormq lacks what one needs."""
        writer = compat.confirm_writer(channel)
        return None if writer is None else cls(channel, writer)

    def publish(
        self, exchange: str, routing_key: str, body: bytes, properties: Basic.Properties
    ) -> asyncio.Future[ConfirmationFrameType]:
        writer = self._writer
        if not properties.message_id:
            properties.message_id = uuid.uuid4().hex  # returns are matched by message id
        # Encode first: a message that cannot be encoded must not take a delivery tag.
        frames = frames_out.publish(
            self.channel.number, exchange, routing_key, body, properties, writer.max_content_size
        )
        confirmation = writer.confirmation(properties.message_id)
        self._frames += frames
        if not self._scheduled:
            # The first message of a loop turn goes out at once, adding no latency to a
            # lone send; the ones after it in the same turn wait for the flush.
            self.flush()
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self.flush)
        return confirmation

    def flush(self) -> None:
        self._scheduled = False
        if not self._frames:
            return
        if self.channel.is_closed:
            self._frames = []  # closing the channel rejected their confirmations
            return
        if not self._writer.write(self._frames):
            # Keep them, in order, until the connection's writer has taken some.
            self._scheduled = True
            asyncio.get_running_loop().call_later(0.0005, self.flush)
            return
        self._frames = []


class ConfirmPublisher:
    """Publishes with confirms on one channel, replacing it after any failure."""

    def __init__(self, connector: Connector, settings: Settings) -> None:
        self._connector = connector
        self._settings = settings
        self._channel: AbstractChannel | None = None
        self._batcher: Batcher | None = None
        self._opening: asyncio.Lock = asyncio.Lock()
        self._retired: set[AbstractChannel] = set()
        self._closing: set[asyncio.Task[None]] = set()
        #: Called with the seconds from publish to confirm of each confirmed message.
        self.on_confirmed: Callable[[float], None] | None = None

    async def _open_channel(self, deadline: float) -> AbstractChannel:
        async with self._opening:
            channel = self._channel
            if channel is not None and not channel.is_closed:
                return channel
            remaining = max(deadline - time.monotonic(), 0.1)
            connection = await self._connector.get(deadline=remaining)
            wrapper = await connection.channel(publisher_confirms=True, on_return_raises=True)
            channel = await wrapper.get_underlay_channel()
            self._batcher = Batcher.open(channel)
            self._channel = channel
            return channel

    async def _confirm(
        self,
        channel: AbstractChannel,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Basic.Properties,
        seconds: float,
    ) -> ConfirmationFrameType | None:
        batcher = self._batcher
        if batcher is None or batcher.channel is not channel:
            return await channel.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=properties,
                mandatory=True,
                timeout=seconds,
            )
        confirmation = batcher.publish(exchange, routing_key, body, properties)
        async with asyncio.timeout(seconds):
            return await confirmation

    def _drop(self, channel: AbstractChannel | None) -> None:
        """Stop sending on a channel that failed; later sends open a fresh one.

        Only that channel: other sends may already be confirming on a new one that a
        concurrent retry opened (dropping whatever was current made one lost channel
        at 1,500 sends/s cascade into thousands of retries). Sends still waiting for
        confirms on it are given their time too (a nack answers one message - a queue
        at its length limit, say - not the channel), so it closes only after that.
        """
        if channel is None or self._channel is not channel:
            return
        if self._batcher is not None and self._batcher.channel is channel:
            self._batcher.flush()
        self._channel = None
        if channel.is_closed:
            return
        self._retired.add(channel)
        loop = asyncio.get_running_loop()
        loop.call_later(self._settings.confirm_timeout, self._close_retired, channel)

    def _close_retired(self, channel: AbstractChannel) -> None:
        if channel in self._retired:
            self._retired.discard(channel)
            task = asyncio.get_running_loop().create_task(_close_quietly(channel))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Basic.Properties,
        *,
        deadline: float | None = None,
    ) -> None:
        """Return once RabbitMQ has confirmed the message; raise if it did not.

        The deadline (``publish_deadline`` unless given) covers every attempt,
        the first included, and the connecting in between.
        """
        observe = self.on_confirmed
        started = time.perf_counter() if observe is not None else 0.0
        budget = self._settings.publish_deadline if deadline is None else deadline
        until = time.monotonic() + budget
        channel = self._channel
        if channel is not None and not channel.is_closed:
            try:
                confirm = await self._confirm(
                    channel,
                    exchange,
                    routing_key,
                    body,
                    properties,
                    min(self._settings.confirm_timeout, budget),
                )
                if isinstance(confirm, Basic.Ack):
                    if observe is not None:
                        observe(time.perf_counter() - started)
                    return
            except aiormq.exceptions.PublishError:
                raise self._unroutable(exchange, routing_key) from None
            except aiormq.exceptions.ChannelAccessRefused as exc:
                doing = f"publish to {exchange!r}"
                raise access_refused(exc, doing, self._settings.namespace) from None
            except RETRYABLE as exc:
                _reraise_if_cancelled(exc)
            self._drop(channel)  # it nacked or failed: what comes next uses a fresh one
        await self._publish_retrying(exchange, routing_key, body, properties, budget, until)
        if observe is not None:
            observe(time.perf_counter() - started)

    async def _publish_retrying(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Basic.Properties,
        budget: float,
        until: float,
    ) -> None:
        pause, attempt = 0.05, 0
        last: BaseException | None = None
        while True:
            attempt += 1
            channel: AbstractChannel | None = None
            try:
                # Connecting can take longer than its own retries allow (a node that
                # accepts TCP but never answers): bound the whole attempt.
                async with asyncio.timeout(max(until - time.monotonic(), 0.1)):
                    channel = await self._open_channel(until)
                    timeout = min(
                        self._settings.confirm_timeout, max(until - time.monotonic(), 0.1)
                    )
                    confirm = await self._confirm(
                        channel, exchange, routing_key, body, properties, timeout
                    )
                if isinstance(confirm, Basic.Ack):
                    if attempt > 1:
                        log.info("publish to %s confirmed after %d attempts", exchange, attempt)
                    return
                last = NotConfirmed(f"RabbitMQ nacked the message to {exchange!r}")
            except aiormq.exceptions.PublishError:
                raise self._unroutable(exchange, routing_key) from None
            except aiormq.exceptions.ChannelAccessRefused as exc:
                doing = f"publish to {exchange!r}"
                raise access_refused(exc, doing, self._settings.namespace) from None
            except BrokerUnavailable as exc:
                last = exc
            except RETRYABLE as exc:
                _reraise_if_cancelled(exc)
                last = exc
            self._drop(channel)
            if time.monotonic() + pause >= until:
                raise NotConfirmed(
                    f"message to exchange {exchange!r} (key {routing_key!r}) was not confirmed "
                    f"within {budget:.0f} s after {attempt} attempts (last: "
                    f"{type(last).__name__}: {last}); it may or may not have been queued - "
                    "send it again (handlers are idempotent) or raise publish_deadline."
                ) from last
            log.warning(
                "publish to %s failed (%s: %s); retrying on a new channel",
                exchange,
                type(last).__name__,
                last,
            )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)

    def _unroutable(self, exchange: str, routing_key: str) -> Unroutable:
        return Unroutable(
            f"no queue is bound to exchange {exchange!r} for routing key {routing_key!r}: "
            "start a worker for that queue first, or declare it with `leveret declare`."
        )

    async def close(self) -> None:
        channels = [self._channel, *self._retired]
        self._channel = None
        self._retired.clear()
        if self._batcher is not None:
            self._batcher.flush()
        for channel in channels:
            if channel is not None and not channel.is_closed:
                await _close_quietly(channel)


def _reraise_if_cancelled(exc: BaseException) -> None:
    """A pending confirm is cancelled when a heartbeat times out: that is a lost
    connection, not our caller cancelling us - unless our task is being cancelled."""
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise exc


async def _close_quietly(channel: AbstractChannel) -> None:
    try:
        await channel.close()
    except Exception:
        log.debug("closing a broken channel failed", exc_info=True)
