"""A channel for reading a queue by hand: how many messages wait, a consumer, acks.

The worker's consumer (``leveret.amqp.consume``) settles whatever its tasks finish, as
fast as it can. Operations on a queue (browsing it, replaying or purging its messages)
need the opposite: one consumer at a time with a prefetch they choose, each message
acknowledged only when they say so, and everything else left unacknowledged so that
closing the channel - or a crash - gives it back to the queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel

from leveret.amqp.channels import close_quietly
from leveret.amqp.types import Connection, Delivery

log = logging.getLogger(__name__)

#: What a reader's calls raise when the broker closes its channel (a queue deleted, a
#: permission refused) or the connection is lost. The channel is gone then: close the
#: reader; what it held unacknowledged is back in its queue.
CHANNEL_ERRORS: tuple[type[BaseException], ...] = (aiormq.exceptions.AMQPError, ConnectionError)

#: Called with each delivery of a consumer; deliveries arrive one after another.
OnDelivery = Callable[[Delivery], Coroutine[Any, Any, Any]]


class QueueReader:
    """One channel without publisher confirms, whose deliveries are settled by hand."""

    def __init__(self, channel: AbstractChannel) -> None:
        self._channel = channel

    @classmethod
    async def open(cls, connection: Connection) -> QueueReader:
        wrapper = await connection.channel(publisher_confirms=False)
        return cls(await wrapper.get_underlay_channel())

    @property
    def is_closed(self) -> bool:
        return bool(self._channel.is_closed)

    async def ready(self, queue: str) -> int:
        """Messages ready in ``queue`` (not those delivered and unacknowledged).

        A queue that does not exist raises one of ``CHANNEL_ERRORS`` and closes the
        channel: ``count_ready`` answers None instead.
        """
        ok = await self._channel.queue_declare(queue, passive=True)
        return int(ok.message_count or 0)

    async def stats(self, queue: str) -> tuple[int, int]:
        """``(ready messages, consumers)`` of ``queue``; raises like ``ready``."""
        ok = await self._channel.queue_declare(queue, passive=True)
        return int(ok.message_count or 0), int(ok.consumer_count or 0)

    async def consume(self, queue: str, on_delivery: OnDelivery, *, prefetch: int) -> str:
        """Start a consumer receiving at most ``prefetch`` unacknowledged messages;
        returns its tag, for ``cancel``."""
        await self._channel.basic_qos(prefetch_count=prefetch, global_=False)
        ok = await self._channel.basic_consume(queue, on_delivery, no_ack=False)
        return str(ok.consumer_tag)

    async def cancel(self, consumer_tag: str) -> None:
        """No more deliveries to that consumer; those it had stay unacknowledged."""
        await self._channel.basic_cancel(consumer_tag)

    async def ack(self, delivery: Delivery) -> None:
        """Take ``delivery`` out of its queue for good."""
        tag: int = delivery.delivery.delivery_tag  # type: ignore[union-attr,assignment]
        await self._channel.basic_ack(tag)

    async def close(self) -> None:
        """Close the channel: the broker takes back whatever it still has unacknowledged.

        Never raises: a channel that cannot be closed is gone already.
        """
        await close_quietly(self._channel)


async def count_ready(connection: Connection, queue: str) -> int | None:
    """Messages ready in ``queue``, or None when it does not exist."""
    reader = await QueueReader.open(connection)
    try:
        return await reader.ready(queue)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return None
    finally:
        await reader.close()


async def queue_stats(connection: Connection, queues: list[str]) -> dict[str, tuple[int, int]]:
    """``(ready, consumers)`` of each queue that exists, by passive declares on one
    channel (reopened after each queue that does not exist, which closes it)."""
    found: dict[str, tuple[int, int]] = {}
    reader = await QueueReader.open(connection)
    try:
        for queue in queues:
            if reader.is_closed:
                await reader.close()
                reader = await QueueReader.open(connection)
            try:
                found[queue] = await reader.stats(queue)
            except aiormq.exceptions.ChannelNotFoundEntity:
                continue
    finally:
        await reader.close()
    return found
