"""The in-memory kit: a user's App, its worker and RabbitMQ, all in the test's process.

Nothing runs on its own: ``run_until_idle`` hands ready deliveries one at a time to
the engine's own delivery pipeline (the worker's), highest priority first, and
``advance`` moves a virtual clock, so a ten-minute backoff costs nothing. Handlers
themselves run on the real event loop: a task's time limit is real time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from leveret import message
from leveret.amqp import Properties
from leveret.amqp.connection import worker_identity
from leveret.amqp.consume import Settle
from leveret.app import App
from leveret.deadletter import DeadLetter, Filter
from leveret.delivery import DeliveryPipeline
from leveret.errors import LeveretError
from leveret.poison import Isolation
from leveret.sending import Transport
from leveret.settings import Settings
from leveret.task import TaskContext
from leveret.testing.clock import Clock
from leveret.testing.harness import Harness, check_seconds
from leveret.testing.memory import MemoryBroker, MemoryQueue, Message
from leveret.testing.record import run_of

#: Deliveries one ``run_until_idle`` may hand out before it decides a task never settles.
MAX_DELIVERIES = 100_000


class WorkerKilled(BaseException):
    """Raise it in a handler to model its worker dying mid-task (SIGKILL, OOM).

    In-memory only: the delivery goes back to its queue unsettled and ``redelivered``,
    counted by a quorum queue, as when a real worker is killed; a task that keeps
    doing this ends in dead letters as ``delivery-limit``.
    """


class KitError(LeveretError):
    """The kit was used in a way it cannot follow (see the message)."""


class _NoWaiting(Isolation):
    """A lone delivery need not wait for stragglers: in memory, every delivery is
    handed over whole, one at a time, and none is ever on its way."""

    def arrived(self) -> None:
        pass


class Kit(Harness):
    """An App bound to an in-memory RabbitMQ, with a worker for its queues."""

    kind = "memory"

    def __init__(self, app: App, *, queues: list[str] | None = None) -> None:
        super().__init__(app)
        self.clock = Clock()
        self.queues = queues
        self._saved: tuple[Transport, Settings] | None = None
        self._pipeline: DeliveryPipeline | None = None
        self.broker = MemoryBroker(app.settings, self.clock, self._known)

    def _known(self, task: str) -> bool:
        return task in self.app.contracts or task in self.app.registry

    @property
    def now(self) -> float:
        return self.clock.now

    async def start(self) -> Kit:
        """Bind the app to the in-memory broker and declare its queues."""
        app = self.app
        if self._saved is None:
            await app.close()
            self._saved = (app.transport, app.settings)
            app.bind(self.broker.transport())
            app.middleware.append(self.recorder)
        await app.declare()
        return self

    async def close(self) -> None:
        """Bind the app back to RabbitMQ (as it was before the kit)."""
        if self._saved is None:
            return
        transport, settings = self._saved
        self._saved = None
        if self.recorder in self.app.middleware:
            self.app.middleware.remove(self.recorder)
        self.app.bind(transport, settings=settings)

    async def __aenter__(self) -> Kit:
        return await self.start()

    # -- the worker -----------------------------------------------------------------

    @property
    def pipeline(self) -> DeliveryPipeline:
        if self._pipeline is None:
            served = sorted({r.task.queue for r in self.app.registry.values()})
            stopping = asyncio.Event()
            pipeline = DeliveryPipeline(
                self.app,
                identity=worker_identity(),  # as a worker in this process would write it
                queues=self.queues or served,
                stopping=stopping,
                settle_acks=_nothing,
            )
            pipeline.poison.gate = _NoWaiting(stopping)
            self._pipeline = pipeline
        return self._pipeline

    def _consumed(self) -> list[tuple[str, MemoryQueue]]:
        names = self.queues or sorted({r.task.queue for r in self.app.registry.values()})
        found = [(q, self.broker.work_queue(q)) for q in names]
        return [(q, mq) for q, mq in found if mq is not None]

    def _next(self) -> tuple[str, MemoryQueue, Message] | None:
        """The oldest queue head among the consumed queues (each queue in its own order)."""
        best: tuple[str, MemoryQueue, Message] | None = None
        for name, queue in self._consumed():
            if not queue.messages:
                continue
            head = min(queue.messages, key=queue._rank)
            if best is None or head.seq < best[2].seq:
                best = (name, queue, head)
        return best

    async def run_until_idle(self) -> int:
        self._require_started()
        handled = 0
        while handled < MAX_DELIVERIES:
            self.broker.release_due()
            found = self._next()
            if found is None:
                return handled
            name, queue, msg = found
            queue.messages.remove(msg)
            handled += 1
            delivered = self.broker.deliver(msg)
            try:
                settle = await self.pipeline.process(delivered, queue=name)
            except WorkerKilled as killed:
                self._record_killed(delivered.header.properties, name, killed)
                self.broker.returned(queue, msg, counted=True)
                continue
            if settle is Settle.REQUEUE:
                self.broker.returned(queue, msg, counted=True)
        raise KitError(
            f"still running after {MAX_DELIVERIES} deliveries: a task that is never settled "
            "(requeued for ever) or that sends itself without end?"
        )

    def _record_killed(self, props: Properties, queue: str, killed: BaseException) -> None:
        headers = props.headers or {}
        ctx = TaskContext(
            task_id=props.message_id or "",
            name=props.message_type or "",
            queue=queue,
            attempt=message.attempt(headers) or 1,
            redelivered=False,
            headers=headers,
        )
        self.recorder.runs.append(run_of(ctx, "killed", killed, self.now))

    async def advance(self, seconds: float) -> None:
        until = self.clock.now + check_seconds(seconds)
        self._require_started()
        await self.run_until_idle()
        while (due := self.broker.next_due()) is not None and due <= until:
            self.clock.advance_to(due)
            await self.run_until_idle()
        self.clock.advance_to(until)
        await self.run_until_idle()

    async def drain(self, within: float = 3600.0) -> None:
        until = self.clock.now + check_seconds(within)
        self._require_started()
        await self.run_until_idle()
        while (due := self.broker.next_due()) is not None:
            if due > until:
                raise KitError(
                    f"still waiting after {within:g} s: a message is due at {due:g} s on the "
                    f"kit's clock (now {self.clock.now:g} s); drain(within=...) longer, or "
                    "advance() to it"
                )
            self.clock.advance_to(due)
            await self.run_until_idle()

    def _require_started(self) -> None:
        if self._saved is None:
            raise KitError(
                "the kit is not started: use `async with Kit(app) as kit:` or the "
                "leveret_kit fixture"
            )

    # -- what is where --------------------------------------------------------------

    def queued(self, queue: str) -> list[Message]:
        """Messages waiting in a work queue now, in the order a consumer would get them."""
        found = self.broker.work_queue(queue)
        if found is None:
            return []
        return sorted(found.messages, key=found._rank)

    @property
    def delayed(self) -> list[tuple[float, Message]]:
        """Messages in the delay levels, with the kit-clock time each is due."""
        return [(due, msg) for due, _, _, msg in sorted(self.broker.delayed)]

    @property
    def parked(self) -> list[Message]:
        """Delayed messages whose queue was gone when they arrived (the unroutable queue)."""
        return list(self.broker.queues[self.broker.names.unroutable].messages)

    def _letters(self, criteria: dict[str, Any]) -> list[tuple[MemoryQueue, Message, DeadLetter]]:
        flt = Filter.of(criteria)
        found = []
        for queue in flt.queues or sorted(self.app.queues):
            dead = self.broker.dead_queue(queue)
            if dead is None:
                continue
            for msg in dead.messages:
                letter = DeadLetter.parse(
                    queue, msg.body, self.broker.deliver(msg).header.properties
                )
                if flt.matches(letter):
                    found.append((dead, msg, letter))
        return found

    async def dead_letters(self, **criteria: Any) -> list[DeadLetter]:
        return [letter for _, _, letter in self._letters(criteria)]

    async def replay(self, **criteria: Any) -> int:
        now = int(time.time() * 1000)
        exchange = self.broker.names.tasks_exchange
        chosen = self._letters(criteria)
        for dead, msg, letter in chosen:
            self.broker.publish(
                exchange, letter.queue, msg.body, letter.replay_properties(now), check=False
            )
            dead.messages.remove(msg)
        return len(chosen)

    async def _publish_raw(
        self, exchange: str, routing_key: str, body: bytes, properties: Properties
    ) -> None:
        self._require_started()
        self.broker.publish(exchange, routing_key, body, properties, check=False)


async def _nothing() -> None:
    pass
