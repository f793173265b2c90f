"""Straight AMQP beside the App: a namespace of a test's own and its removal, queue
sizes, and messages published or read as they are, with nothing of leveret between.

Queue arguments here are AMQP names (``Names(namespace).work_queue("jobs")``), not the
App's short queue names: these helpers look at what is on the broker.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from contextlib import aclosing
from typing import Any

import aio_pika
import aiormq
from pamqp.commands import Basic

from leveret import LeveretError, Settings
from leveret.amqp.browse import browse
from leveret.amqp.topology import Topology


def fresh_namespace(prefix: str = "t") -> str:
    """A namespace no other test uses: everything a test declares lives under it, so
    tests never see each other's queues, whatever order they run in."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


class admin_channel:
    """A raw channel straight to a node (not through a fault proxy), for inspection.

    ``url`` may list several nodes, comma-separated: the first that answers is used.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: aio_pika.abc.AbstractConnection | None = None

    async def __aenter__(self) -> aiormq.abc.AbstractChannel:
        urls = self.url.split(",")
        for i, url in enumerate(urls):
            try:
                self.connection = await aio_pika.connect(url, timeout=10 if len(urls) == 1 else 4)
                break
            except (*aio_pika.exceptions.CONNECTION_EXCEPTIONS, TimeoutError):
                if i == len(urls) - 1:
                    raise
        assert self.connection is not None
        wrapper = await self.connection.channel(publisher_confirms=False)
        return await wrapper.get_underlay_channel()

    async def __aexit__(self, *exc: object) -> None:
        if self.connection is not None:
            await self.connection.close()


async def delete_namespace(
    url: str, settings: Settings, queues: Iterable[str], *, best_effort: bool = False
) -> None:
    """Remove every queue and exchange declared under ``settings.namespace``.

    ``best_effort`` is for brokers a test may have left broken (the fault suite): a
    failure is printed instead of failing the test's teardown.
    """
    try:
        async with admin_channel(url) as channel:
            await Topology(settings).delete(channel, sorted(set(queues)))
    except (LeveretError, aiormq.exceptions.AMQPError, OSError) as exc:
        if not best_effort:
            raise
        print(f"cleanup of namespace {settings.namespace} failed: {exc}")


async def queue_size(url: str, queue: str) -> int:
    """Messages ready in a queue now (cheap enough to poll in a tight loop)."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        ok = await channel.queue_declare(queue, passive=True)
        return int(ok.message_count or 0)
    finally:
        await connection.close()


async def peek(url: str, queue: str) -> list[aiormq.abc.DeliveredMessage]:
    """Every message of a queue, leaving them all in it."""
    connection = await aio_pika.connect(url)
    try:
        async with aclosing(browse(connection, queue)) as deliveries:
            return [d async for d in deliveries]
    finally:
        await connection.close()


async def ids_in(url: str, queue: str) -> list[str]:
    """The message ids in a queue, in queue order, leaving the messages in it."""
    return [str(d.header.properties.message_id) for d in await peek(url, queue)]


async def fill(
    url: str,
    queue: str,
    messages: Iterable[tuple[bytes, Basic.Properties]],
    *,
    window: int = 2000,
) -> int:
    """Publish straight into ``queue`` through the default exchange, confirmed, many in
    flight: the fast way to a queue of thousands."""
    connection = await aiormq.connect(url)
    count = 0
    try:
        channel = await connection.channel(publisher_confirms=True)
        pending: list[Any] = []
        for body, props in messages:
            pending.append(channel.basic_publish(body, routing_key=queue, properties=props))
            if len(pending) >= window:
                await asyncio.gather(*pending)
                count += len(pending)
                pending.clear()
        await asyncio.gather(*pending)
        count += len(pending)
    finally:
        await connection.close()
    return count
