"""A lease held by consuming a single-active-consumer queue, and the state kept in it.

RabbitMQ delivers the messages of a queue declared with ``x-single-active-consumer``
to one consumer at a time; when that consumer's channel closes (its process died, its
connection was cut, a heartbeat went unanswered) the broker takes back whatever it held
unacknowledged and hands the queue to the next consumer, in that order, inside the
queue. So a consumer that holds a message of such a queue is the only one that does,
and a message it held comes back before anyone else can be served: the queue's messages
are both the lease and a state that moves with it.

``LeaseChannel`` is one such consumer on a confirm channel of its own. It publishes to
its queue with confirms (a state that is written is in the queue before the call
returns), acknowledges by hand, and answers ``ping``: a round trip on this very
channel, which fails once the broker has closed it, so a holder that was frozen can
tell that its lease may be gone before it acts on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel
from pamqp.commands import Basic

from leveret.amqp.types import Connection, Delivery
from leveret.errors import NotConfirmed

#: What the calls raise once the channel or its connection is gone: the lease is lost.
LEASE_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    ConnectionError,
    TimeoutError,
    asyncio.CancelledError,
)

OnDelivery = Callable[[Delivery], Coroutine[Any, Any, Any]]


def lease_queue_arguments(queue_type: str) -> dict[str, Any]:
    arguments: dict[str, Any] = {"x-single-active-consumer": True, "x-queue-type": queue_type}
    return arguments


class LeaseChannel:
    """A consumer of one single-active-consumer queue, and a confirmed publisher to it."""

    def __init__(self, channel: AbstractChannel, queue: str) -> None:
        self._channel = channel
        self.queue = queue

    @classmethod
    async def open(
        cls,
        connection: Connection,
        queue: str,
        *,
        queue_type: str,
        status_queue: str | None = None,
    ) -> LeaseChannel:
        """Declare the queue (durable) and open a confirm channel for it."""
        wrapper = await connection.channel(publisher_confirms=True, on_return_raises=True)
        channel = await wrapper.get_underlay_channel()
        await channel.queue_declare(
            queue, durable=True, arguments=lease_queue_arguments(queue_type)
        )
        if status_queue is not None:
            # The newest status only: readers browse it, nobody consumes it.
            await channel.queue_declare(
                status_queue,
                durable=True,
                arguments={"x-max-length": 1, "x-overflow": "drop-head"},
            )
        return cls(channel, queue)

    @property
    def is_closed(self) -> bool:
        return bool(self._channel.is_closed)

    @property
    def closing(self) -> asyncio.Future[Any]:
        """Done when the channel closes, for whatever reason."""
        return self._channel.closing

    async def consume(self, on_delivery: OnDelivery, *, prefetch: int = 1000) -> str:
        """Join the queue's consumers; deliveries arrive only while this one is active."""
        await self._channel.basic_qos(prefetch_count=prefetch, global_=False)
        ok = await self._channel.basic_consume(self.queue, on_delivery, no_ack=False)
        return str(ok.consumer_tag)

    async def publish(
        self,
        body: bytes,
        *,
        within: float,
        queue: str | None = None,
        headers: dict[str, Any] | None = None,
    ) -> None:
        """Put a persistent message in the queue (or ``queue``); return once confirmed."""
        properties = Basic.Properties(
            content_type="application/json",
            delivery_mode=2,
            headers=headers or {},
        )
        confirm = await self._channel.basic_publish(
            body,
            exchange="",
            routing_key=queue or self.queue,
            properties=properties,
            mandatory=True,
            timeout=within,
        )
        if not isinstance(confirm, Basic.Ack):
            raise NotConfirmed(f"RabbitMQ did not take the message for {queue or self.queue!r}")

    async def ack(self, delivery: Delivery) -> None:
        tag: int = delivery.delivery.delivery_tag  # type: ignore[union-attr,assignment]
        await self._channel.basic_ack(tag)

    async def ping(self, within: float) -> int:
        """A round trip on this channel; returns how many messages are ready (not yet
        delivered to anyone)."""
        async with asyncio.timeout(within):
            ok = await self._channel.queue_declare(self.queue, passive=True)
        return int(ok.message_count or 0)

    async def close(self) -> None:
        """Close the channel: what it held goes back to the queue. Never raises."""
        if self._channel.is_closed:
            return
        try:
            async with asyncio.timeout(2):
                await self._channel.close()
        except BaseException as exc:  # closing a dead channel: its errors do not matter
            if isinstance(exc, asyncio.CancelledError):
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise


async def declared_consumers(connection: Connection, queue: str) -> tuple[int, int] | None:
    """(ready messages, consumers) of ``queue``, or None if it does not exist."""
    wrapper = await connection.channel(publisher_confirms=False)
    channel = await wrapper.get_underlay_channel()
    try:
        ok = await channel.queue_declare(queue, passive=True)
        return int(ok.message_count or 0), int(ok.consumer_count or 0)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return None
    finally:
        if not channel.is_closed:
            await channel.close()
