"""RabbitMQ in memory: the exchanges, queues and delay levels of one namespace.

A model of the documented topology, not a mock of a client: the runtime's own
sender, outcomes and delivery pipeline publish and declare through it exactly as
through RabbitMQ (``leveret.sending.Transport``), and it routes by the same names
and routing keys. What it models:

- the tasks exchange (direct), the delay levels (a routing key's delay bits become
  a due time on a virtual clock, in units of ``delay_unit_ms``), the delivery
  exchange, the dead-letter exchange and one dead-letter queue per work queue;
- ``mandatory`` publishing: no queue for a message is ``Unroutable``; a delayed
  message whose queue is gone on arrival is parked, as the alternate exchange does;
- classic queues with ``x-max-priority`` (higher first, FIFO within a priority, a
  priority above the maximum served as the maximum) and quorum queues (FIFO, as on
  RabbitMQ 3.10; ``x-delivery-count`` and ``x-delivery-limit``: N allows N+1
  deliveries, then RabbitMQ dead-letters the message itself, with ``x-death``);
- properties through the AMQP codec and back, so headers read as a consumer reads them.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from leveret import delays
from leveret.amqp import Connection, Delivery, Properties
from leveret.amqp.connection import Connector
from leveret.amqp.memory import NO_CONNECTION, delivery, through_wire
from leveret.amqp.publish import ConfirmPublisher
from leveret.amqp.topology import Names, QueueSpec, Topology, work_queue_arguments
from leveret.errors import TaskNotFound, Unroutable
from leveret.sending import Transport
from leveret.settings import Settings
from leveret.testing.clock import Clock


@dataclass
class Message:
    """A message in a queue: what was published, and what the queue knows of it."""

    body: bytes
    properties: Properties
    exchange: str
    routing_key: str
    seq: int
    redelivered: bool = False
    delivery_count: int = 0

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.properties.headers or {})


@dataclass
class MemoryQueue:
    """One queue, with the arguments it was declared with."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)

    @property
    def quorum(self) -> bool:
        return self.arguments.get("x-queue-type") == "quorum"

    def _rank(self, msg: Message) -> tuple[int, int]:
        top = self.arguments.get("x-max-priority")
        if top is None:
            return (0, msg.seq)
        return (-min(msg.properties.priority or 0, int(top)), msg.seq)

    def take(self) -> Message | None:
        """The next message a consumer gets, removed from the queue."""
        if not self.messages:
            return None
        best = min(self.messages, key=self._rank)
        self.messages.remove(best)
        return best


class MemoryBroker:
    """The namespace's exchanges and queues, and the messages waiting in delay levels."""

    def __init__(self, settings: Settings, clock: Clock, known_task: Callable[[str], bool]) -> None:
        self.settings = settings
        self.names = Names(settings.namespace)
        self.clock = clock
        self._known_task = known_task
        self.queues: dict[str, MemoryQueue] = {}
        #: (due, seq, routing key, message) of messages in the delay levels.
        self.delayed: list[tuple[float, int, str, Message]] = []
        self._seq = itertools.count()
        self._tags = itertools.count(1)
        self._levels = {self.names.delay_level(k) for k in range(settings.delay_levels)}
        self.declare_core()

    # -- topology -------------------------------------------------------------------

    def declare_core(self) -> None:
        self.queues.setdefault(self.names.unroutable, MemoryQueue(self.names.unroutable))

    def declare(self, spec: QueueSpec) -> None:
        work = self.names.work_queue(spec.name)
        if work not in self.queues:
            self.queues[work] = MemoryQueue(work, work_queue_arguments(spec, self.names))
        dead = self.names.dead_queue(spec.name)
        if dead not in self.queues:
            self.queues[dead] = MemoryQueue(dead, {"x-queue-type": spec.type})

    def work_queue(self, queue: str) -> MemoryQueue | None:
        return self.queues.get(self.names.work_queue(queue))

    def dead_queue(self, queue: str) -> MemoryQueue | None:
        return self.queues.get(self.names.dead_queue(queue))

    # -- publishing -----------------------------------------------------------------

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        *,
        check: bool = True,
    ) -> None:
        """Route a message as RabbitMQ would; ``Unroutable`` if no queue takes it.

        ``check``: refuse a task the app does not know, at the line that sends it.
        """
        n = self.names
        msg = Message(
            body, through_wire(properties, len(body)), exchange, routing_key, next(self._seq)
        )
        if (
            check
            and exchange in (n.tasks_exchange, *self._levels)
            and not self._known_task(msg.properties.message_type or "")
        ):
            raise TaskNotFound(
                f"task {msg.properties.message_type!r} is not known to this app: define it "
                "with @app.handle(...) or app.task(...), or app.add(task) for a contract "
                "without a handler here. To test what a worker does with a task it does "
                "not know, publish it as another service would: kit.publish(...)"
            )
        if exchange == n.tasks_exchange:
            target = self.work_queue(routing_key)
        elif exchange == n.dead_exchange:
            target = self.dead_queue(routing_key)
        elif exchange == "":
            target = self.queues.get(routing_key)
        elif exchange in self._levels or exchange == n.delivery_exchange:
            units, queue = delays.units_of(routing_key, self.settings.delay_levels)
            if units:
                due = self.clock.now + units * self.settings.delay_unit_ms / 1000
                heapq.heappush(self.delayed, (due, msg.seq, queue, msg))
                return
            self._arrive(queue, msg)
            return
        else:
            raise Unroutable(f"exchange {exchange!r} does not exist in namespace {n.namespace!r}")
        if target is None:
            raise Unroutable(
                f"no queue is bound to exchange {exchange!r} for routing key {routing_key!r}: "
                "start a worker for that queue first, or declare it with `leveret declare`."
            )
        target.messages.append(msg)

    def _arrive(self, queue: str, msg: Message) -> None:
        """The end of the delay ladder: the work queue, or parked if it is gone."""
        target = self.work_queue(queue)
        if target is None:
            target = self.queues[self.names.unroutable]
        target.messages.append(msg)

    def next_due(self) -> float | None:
        return self.delayed[0][0] if self.delayed else None

    def release_due(self) -> int:
        """Move every delayed message due by now into its queue, earliest first."""
        moved = 0
        while self.delayed and self.delayed[0][0] <= self.clock.now:
            _, _, queue, msg = heapq.heappop(self.delayed)
            self._arrive(queue, msg)
            moved += 1
        return moved

    # -- consuming ------------------------------------------------------------------

    def deliver(self, msg: Message) -> Delivery:
        """A delivery of ``msg``: a fresh decoded copy, flagged and counted as RabbitMQ does."""
        props = through_wire(msg.properties, len(msg.body))
        if msg.delivery_count:
            props.headers = {**(props.headers or {}), "x-delivery-count": msg.delivery_count}
        return delivery(
            msg.body,
            props,
            exchange=msg.exchange,
            routing_key=msg.routing_key,
            redelivered=msg.redelivered,
            tag=next(self._tags),
        )

    def returned(self, queue: MemoryQueue, msg: Message, *, counted: bool) -> None:
        """An unsettled delivery comes back to the head of its queue (``counted``: its
        consumer died, which a quorum queue counts; a requeue is not counted)."""
        msg.redelivered = True
        if queue.quorum and counted:
            msg.delivery_count += 1
            limit = queue.arguments.get("x-delivery-limit")
            if limit is not None and msg.delivery_count > int(limit):
                self._broker_dead_letter(queue, msg, "delivery_limit")
                return
        queue.messages.append(msg)  # its seq keeps its place

    def _broker_dead_letter(self, queue: MemoryQueue, msg: Message, reason: str) -> None:
        """RabbitMQ's own dead-lettering, with the ``x-death`` headers it writes."""
        headers = msg.headers
        headers.pop("x-delivery-count", None)
        death = {
            "count": 1,
            "reason": reason,
            "queue": queue.name,
            "time": datetime.fromtimestamp(int(self.clock.wall()), tz=UTC),
            "exchange": msg.exchange,
            "routing-keys": [msg.routing_key],
        }
        headers["x-death"] = [death]
        headers.setdefault("x-first-death-reason", reason)
        headers.setdefault("x-first-death-queue", queue.name)
        headers.setdefault("x-first-death-exchange", msg.exchange)
        msg.properties.headers = headers
        key = queue.arguments.get("x-dead-letter-routing-key", msg.routing_key)
        dead = self.dead_queue(str(key))
        if dead is not None:
            dead.messages.append(msg)

    def transport(self) -> Transport:
        """The transport an App is bound to: its sends and declarations come here."""
        broker = self

        class MemoryConnector(Connector):
            async def get(self, *, deadline: float | None = None) -> Connection:
                return NO_CONNECTION

            async def close(self) -> None:
                pass

        class MemoryPublisher(ConfirmPublisher):
            async def publish(
                self,
                exchange: str,
                routing_key: str,
                body: bytes,
                properties: Properties,
                *,
                deadline: float | None = None,
            ) -> None:
                broker.publish(exchange, routing_key, body, properties)

            async def close(self) -> None:
                pass

        class MemoryTopology(Topology):
            async def declare(
                self, connection: Connection, specs: Iterable[QueueSpec], *, core: bool = True
            ) -> None:
                for spec in specs:
                    broker.declare(spec)

            async def queue_exists(self, connection: Connection, queue: str) -> bool:
                return broker.work_queue(queue) is not None

        return Transport(MemoryConnector, MemoryPublisher, MemoryTopology)
