"""Looking at a live broker without changing it, for ``leveret doctor``.

Each look runs on a channel of its own, since a refusal closes the channel it came
on. AMQP shows whether a queue or exchange exists and how many messages a queue
holds; a queue's arguments are compared by declaring it again with the arguments
wanted, which the broker accepts only if they are exactly the ones it has (a no-op)
and otherwise refuses naming the first argument that differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiormq
from aio_pika.abc import AbstractConnection

from leveret.amqp.topology import scratch_channel


@dataclass(frozen=True)
class QueueState:
    messages: int
    consumers: int


def server_version(connection: AbstractConnection) -> str:
    """The broker's version as it announced it when the connection opened ("" if not)."""
    underlay = getattr(connection, "transport", None)
    props = getattr(getattr(underlay, "connection", None), "server_properties", None) or {}
    version = props.get("version", b"")
    return version.decode() if isinstance(version, bytes) else str(version)


async def queue_state(connection: AbstractConnection, name: str) -> QueueState | None:
    """Messages ready and consumers of a queue; None if it does not exist."""
    async with scratch_channel(connection) as channel:
        try:
            ok = await channel.queue_declare(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
    return QueueState(int(ok.message_count or 0), int(ok.consumer_count or 0))


async def exchange_exists(connection: AbstractConnection, name: str) -> bool:
    async with scratch_channel(connection) as channel:
        try:
            await channel.exchange_declare(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
    return True


async def queue_drift(
    connection: AbstractConnection, name: str, arguments: dict[str, Any]
) -> str | None:
    """How an existing queue's arguments differ from ``arguments`` (None: they do not).

    Only for a queue known to exist: on a missing one this would create it.
    """
    async with scratch_channel(connection) as channel:
        try:
            await channel.queue_declare(name, durable=True, arguments=arguments)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            return str(exc.args[0] if exc.args else exc)
        except aiormq.exceptions.ChannelAccessRefused:
            return None  # cannot compare without configure permission; doctor reports that
    return None


async def exchange_drift(
    connection: AbstractConnection, name: str, kind: str, arguments: dict[str, Any]
) -> str | None:
    """Like ``queue_drift``, for an exchange known to exist."""
    async with scratch_channel(connection) as channel:
        try:
            await channel.exchange_declare(
                name, exchange_type=kind, durable=True, arguments=arguments
            )
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            return str(exc.args[0] if exc.args else exc)
        except aiormq.exceptions.ChannelAccessRefused:
            return None  # cannot compare without configure permission; doctor reports that
    return None
