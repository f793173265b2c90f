"""Confirmed, mandatory publishing that never reports an unconfirmed message as sent.

The fast path is one ``basic_publish`` on a shared confirm channel, so concurrent
sends share it and wait for their own confirms side by side. After a failure the
channel that failed is set aside and a fresh one is used (after a quorum leader
failover one channel was seen nacking every publish for minutes while fresh ones
worked), within a bounded deadline; then the error is raised.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiormq
from aiormq.abc import AbstractChannel
from pamqp.commands import Basic

from broker.connection import CONNECTION_ERRORS, Connector
from broker.errors import BrokerUnavailable, NotConfirmed, Unroutable
from broker.settings import Settings

log = logging.getLogger("leveret.publisher")

#: Failures after which a fresh channel may succeed (CancelledError: see below).
RETRYABLE: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncio.CancelledError)


class Publisher:
    """Publishes with confirms on one channel, replacing it after any failure."""

    def __init__(self, connector: Connector, settings: Settings) -> None:
        self._connector = connector
        self._settings = settings
        self._channel: AbstractChannel | None = None
        self._opening: asyncio.Lock = asyncio.Lock()
        self._retired: set[AbstractChannel] = set()
        self._closing: set[asyncio.Task[None]] = set()

    async def _open_channel(self, deadline: float) -> AbstractChannel:
        async with self._opening:
            channel = self._channel
            if channel is not None and not channel.is_closed:
                return channel
            remaining = max(deadline - time.monotonic(), 0.1)
            connection = await self._connector.get(deadline=remaining)
            wrapper = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self._channel = await wrapper.get_underlay_channel()
            return self._channel

    def _drop(self, channel: AbstractChannel | None) -> None:
        """Stop sending on a channel that failed; later sends open a fresh one.

        Other sends may still wait for their confirms on it (a nack answers one
        message - a queue at its length limit, say - not the channel), so it is
        closed only once those have had their time.
        """
        if channel is None or self._channel is not channel:
            return
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
        budget = self._settings.publish_deadline if deadline is None else deadline
        until = time.monotonic() + budget
        channel = self._channel
        if channel is not None and not channel.is_closed:
            try:
                confirm = await channel.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=properties,
                    mandatory=True,
                    timeout=min(self._settings.confirm_timeout, budget),
                )
                if isinstance(confirm, Basic.Ack):
                    return
            except aiormq.exceptions.PublishError:
                raise self._unroutable(exchange, routing_key) from None
            except RETRYABLE as exc:
                _reraise_if_cancelled(exc)
            self._drop(channel)  # it nacked or failed: what comes next uses a fresh one
        await self._publish_retrying(exchange, routing_key, body, properties, budget, until)

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
                    confirm = await channel.basic_publish(
                        body,
                        exchange=exchange,
                        routing_key=routing_key,
                        properties=properties,
                        mandatory=True,
                        timeout=timeout,
                    )
                if isinstance(confirm, Basic.Ack):
                    if attempt > 1:
                        log.info("publish to %s confirmed after %d attempts", exchange, attempt)
                    return
                last = NotConfirmed(f"RabbitMQ nacked the message to {exchange!r}")
            except aiormq.exceptions.PublishError:
                raise self._unroutable(exchange, routing_key) from None
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
