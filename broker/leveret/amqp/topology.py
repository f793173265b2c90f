"""Names and declarations of every exchange and queue, under one namespace prefix.

    <ns>.tasks        direct   routing key = queue name -> work queue <ns>.q.<queue>
    <ns>.delay.<k>    topic    delay level k: queue with TTL unit*2^k, see leveret.delays
    <ns>.delivery     topic    where the delay ladder ends; work queues bound here too
    <ns>.dead         direct   routing key = queue name -> dead-letter queue <ns>.dlq.<queue>
    <ns>.unroutable   fanout   alternate exchange: delayed messages nobody is bound for

Declarations are idempotent. A queue that already exists with other arguments cannot
be changed in place: that is reported as ``TopologyMismatch`` with the way out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import aiormq
from aio_pika.abc import AbstractConnection
from aiormq.abc import AbstractChannel

from leveret import delays as delay
from leveret.errors import AccessRefused, ConfigError, TopologyMismatch
from leveret.settings import QueueType, Settings

Overflow = Literal["drop-head", "reject-publish", "reject-publish-dlx"]


@dataclass(frozen=True)
class QueueSpec:
    """How one work queue is declared; fixed once the queue exists on the broker."""

    name: str
    type: QueueType = "classic"
    max_priority: int = 10
    delivery_limit: int | None = 10
    max_length: int | None = None
    overflow: Overflow | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Lowest priority of each band above the base one, ascending: ``(5,)`` puts
    #: priorities 5 and up in a queue of their own that workers drain first.
    priority_bands: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in " #*"):
            raise ConfigError(f"queue name {self.name!r} must be non-empty, without spaces, # or *")
        bands = self.priority_bands
        if bands and (list(bands) != sorted(set(bands)) or not 0 < bands[0] <= bands[-1] <= 255):
            raise ConfigError(
                f"queue {self.name!r}: priority_bands {bands} must be distinct priorities "
                "1..255 in ascending order, each the lowest priority of its band, e.g. (5,)"
            )
        if self.type == "quorum" and self.overflow == "drop-head":
            raise ConfigError(
                f"queue {self.name!r}: quorum queues dead-letter at-least-once only with "
                "overflow 'reject-publish'; drop-head would lose messages"
            )

    @property
    def strict_priorities(self) -> bool:
        """Whether every RabbitMQ version runs higher priorities first on this queue."""
        return self.type == "classic" or bool(self.priority_bands)

    def band(self, priority: int) -> str:
        """The queue (by its short name) a message of ``priority`` goes to."""
        chosen = self.name
        for lowest in self.priority_bands:
            if priority >= lowest:
                chosen = band_name(self.name, lowest)
        return chosen

    @property
    def bands(self) -> list[str]:
        """Every queue (short names) of this spec, the highest band first."""
        highs = [band_name(self.name, lowest) for lowest in reversed(self.priority_bands)]
        return [*highs, self.name]


def band_name(queue: str, lowest: int) -> str:
    """The short name of the band of ``queue`` that starts at priority ``lowest``."""
    return f"{queue}.p{lowest}"


@dataclass(frozen=True)
class Names:
    """Every AMQP name derived from the namespace prefix."""

    namespace: str

    @property
    def tasks_exchange(self) -> str:
        return f"{self.namespace}.tasks"

    @property
    def delivery_exchange(self) -> str:
        return f"{self.namespace}.delivery"

    @property
    def dead_exchange(self) -> str:
        return f"{self.namespace}.dead"

    @property
    def unroutable(self) -> str:
        """Name of both the alternate exchange and the queue that parks its messages."""
        return f"{self.namespace}.unroutable"

    def delay_level(self, level: int) -> str:
        """Name of level ``level``'s exchange and of its queue."""
        return f"{self.namespace}.delay.{level}"

    def work_queue(self, queue: str) -> str:
        return f"{self.namespace}.q.{queue}"

    def dead_queue(self, queue: str) -> str:
        return f"{self.namespace}.dlq.{queue}"


def _quorum_safety(spec_type: QueueType) -> dict[str, Any]:
    if spec_type != "quorum":
        return {"x-queue-type": "classic"}
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def work_queue_arguments(spec: QueueSpec, names: Names) -> dict[str, Any]:
    """Arguments of a work queue: priorities or replication, and always a dead-letter route."""
    args: dict[str, Any] = _quorum_safety(spec.type)
    args["x-dead-letter-exchange"] = names.dead_exchange
    args["x-dead-letter-routing-key"] = spec.name
    if spec.type == "classic":
        args["x-max-priority"] = spec.max_priority
    elif spec.delivery_limit is not None:
        args["x-delivery-limit"] = spec.delivery_limit
    if spec.max_length is not None:
        args["x-max-length"] = spec.max_length
    if spec.overflow is not None:
        args["x-overflow"] = spec.overflow
    args.update(spec.extra)
    return args


def delay_queue_arguments(level: int, settings: Settings, names: Names) -> dict[str, Any]:
    """A delay level's queue: fixed TTL, expiring into the next level down."""
    args = _quorum_safety(settings.delay_queue_type)
    args["x-message-ttl"] = settings.delay_unit_ms * 2**level
    args["x-dead-letter-exchange"] = (
        names.delay_level(level - 1) if level > 0 else names.delivery_exchange
    )
    return args


class Topology:
    """Declares the shared exchanges, the delay ladder and work queues on a channel."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names = Names(settings.namespace)

    async def declare(
        self, connection: AbstractConnection, specs: Iterable[QueueSpec], *, core: bool = True
    ) -> None:
        """Declare (on a channel of its own) the shared topology and these work queues."""
        async with scratch_channel(connection) as channel:
            try:
                if core:
                    await self.declare_core(channel)
                for spec in specs:
                    await self.declare_queue(channel, spec)
            except aiormq.exceptions.ChannelAccessRefused as exc:
                doing = "declare the topology"
                raise access_refused(exc, doing, self.settings.namespace) from None

    async def queue_exists(self, connection: AbstractConnection, queue: str) -> bool:
        """Whether the work queue of ``queue`` exists (a passive declare)."""
        async with scratch_channel(connection) as channel:
            try:
                await channel.queue_declare(self.names.work_queue(queue), passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return False
        return True

    async def declare_core(self, channel: AbstractChannel) -> None:
        """Exchanges every producer and worker needs, and the delay ladder."""
        n, levels = self.names, self.settings.delay_levels
        await _exchange(channel, n.unroutable, "fanout")
        await _queue(channel, n.unroutable, _quorum_safety(self.settings.delay_queue_type))
        await channel.queue_bind(n.unroutable, n.unroutable, routing_key="")
        await _exchange(channel, n.tasks_exchange, "direct")
        await _exchange(channel, n.dead_exchange, "direct")
        ae = {"alternate-exchange": n.unroutable}
        await _exchange(channel, n.delivery_exchange, "topic", ae)
        for level in range(levels):
            name = n.delay_level(level)
            await _exchange(channel, name, "topic", ae)
            await _queue(channel, name, delay_queue_arguments(level, self.settings, n))
            await channel.queue_bind(name, name, routing_key=delay.level_pattern(level, levels, 1))
            onward = n.delay_level(level - 1) if level > 0 else n.delivery_exchange
            await channel.exchange_bind(
                destination=onward,
                source=name,
                routing_key=delay.level_pattern(level, levels, 0),
            )

    async def declare_queue(self, channel: AbstractChannel, spec: QueueSpec) -> None:
        """A work queue (one per priority band), its dead-letter queue, and their bindings.

        Every band dead-letters into the one dead-letter queue of the spec.
        """
        n = self.names
        for band in spec.bands:
            work = n.work_queue(band)
            await _queue(channel, work, work_queue_arguments(spec, n))
            await channel.queue_bind(work, n.tasks_exchange, routing_key=band)
            await channel.queue_bind(
                work,
                n.delivery_exchange,
                routing_key=delay.delivery_pattern(self.settings.delay_levels, band),
            )
        dead = n.dead_queue(spec.name)
        await _queue(channel, dead, {"x-queue-type": spec.type})
        await channel.queue_bind(dead, n.dead_exchange, routing_key=spec.name)

    def exchanges(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Every shared exchange as (name, type, arguments), as ``declare_core`` makes them."""
        n = self.names
        ae = {"alternate-exchange": n.unroutable}
        found = [
            (n.unroutable, "fanout", {}),
            (n.tasks_exchange, "direct", {}),
            (n.dead_exchange, "direct", {}),
            (n.delivery_exchange, "topic", ae),
        ]
        found += [(n.delay_level(k), "topic", ae) for k in range(self.settings.delay_levels)]
        return found

    def queues(self, specs: Iterable[QueueSpec]) -> list[tuple[str, dict[str, Any]]]:
        """Every queue as (name, arguments): the shared ones, then each spec's bands and DLQ."""
        n, settings = self.names, self.settings
        found = [(n.unroutable, _quorum_safety(settings.delay_queue_type))]
        found += [
            (n.delay_level(k), delay_queue_arguments(k, settings, n))
            for k in range(settings.delay_levels)
        ]
        for spec in specs:
            found += [(n.work_queue(band), work_queue_arguments(spec, n)) for band in spec.bands]
            found.append((n.dead_queue(spec.name), {"x-queue-type": spec.type}))
        return found

    def bindings(self, specs: Iterable[QueueSpec]) -> list[tuple[str, str, str, str]]:
        """Every binding as (source, destination, "queue" or "exchange", routing key),
        as ``declare_core`` and ``declare_queue`` make them."""
        n, levels = self.names, self.settings.delay_levels
        found = [(n.unroutable, n.unroutable, "queue", "")]
        for level in range(levels):
            name = n.delay_level(level)
            onward = n.delay_level(level - 1) if level > 0 else n.delivery_exchange
            found.append((name, name, "queue", delay.level_pattern(level, levels, 1)))
            found.append((name, onward, "exchange", delay.level_pattern(level, levels, 0)))
        for spec in specs:
            for band in spec.bands:
                work = n.work_queue(band)
                found.append((n.tasks_exchange, work, "queue", band))
                found.append(
                    (n.delivery_exchange, work, "queue", delay.delivery_pattern(levels, band))
                )
            found.append((n.dead_exchange, n.dead_queue(spec.name), "queue", spec.name))
        return found

    async def delete(self, channel: AbstractChannel, queues: list[str]) -> None:
        """Remove everything declared under this namespace, messages included.

        For tests, demos and retiring a namespace after a migration; never needed in
        normal operation.
        """
        n = self.names
        for queue in queues:
            await channel.queue_delete(n.work_queue(queue))
            await channel.queue_delete(n.dead_queue(queue))
        for level in range(self.settings.delay_levels):
            await channel.queue_delete(n.delay_level(level))
            await channel.exchange_delete(n.delay_level(level))
        await channel.queue_delete(n.unroutable)
        for exchange in (n.tasks_exchange, n.delivery_exchange, n.dead_exchange, n.unroutable):
            await channel.exchange_delete(exchange)

    async def delete_on(self, connection: AbstractConnection, queues: list[str]) -> None:
        """``delete``, on a channel of its own (the testing kit's throwaway namespaces)."""
        async with scratch_channel(connection) as channel:
            await self.delete(channel, queues)


@asynccontextmanager
async def scratch_channel(connection: AbstractConnection) -> AsyncIterator[AbstractChannel]:
    """A channel for a few declarations; closed after, unless the broker closed it."""
    wrapper = await connection.channel()
    try:
        yield await wrapper.get_underlay_channel()
    finally:
        if not wrapper.is_closed:
            await wrapper.close()


async def _exchange(
    channel: AbstractChannel, name: str, kind: str, arguments: dict[str, Any] | None = None
) -> None:
    try:
        await channel.exchange_declare(
            exchange=name, exchange_type=kind, durable=True, arguments=arguments or {}
        )
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise _mismatch("exchange", name, arguments or {}, exc) from None


async def _queue(channel: AbstractChannel, name: str, arguments: dict[str, Any]) -> None:
    try:
        await channel.queue_declare(queue=name, durable=True, arguments=arguments)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise _mismatch("queue", name, arguments, exc) from None


def access_refused(exc: Exception, doing: str, namespace: str) -> AccessRefused:
    """An ACCESS_REFUSED from the broker, with the permissions to grant."""
    detail = exc.args[0] if exc.args else exc
    pattern = "^" + namespace.replace(".", "\\.") + "\\."
    return AccessRefused(
        f"RabbitMQ refused to let this user {doing} ({detail}). Grant it the permissions "
        f"its role needs on names matching {pattern!r}; a worker needs configure, write "
        f"and read: rabbitmqctl set_permissions -p <vhost> <user> "
        f"'{pattern}' '{pattern}' '{pattern}'"
    )


def _mismatch(kind: str, name: str, wanted: dict[str, Any], exc: Exception) -> TopologyMismatch:
    detail = exc.args[0] if exc.args else exc
    how = f"`rabbitmqctl delete_queue {name}`" if kind == "queue" else "the management UI"
    return TopologyMismatch(
        f"{kind} {name!r} already exists with other arguments ({detail}); wanted {wanted}. "
        f"RabbitMQ cannot change a {kind}'s arguments in place. Keep the existing settings, "
        f"or migrate: stop producers, drain it, delete it ({how}) and let a worker declare "
        "it anew; or run beside it under a new namespace and move traffic over "
        "(README: 'Changing queue arguments')."
    )
