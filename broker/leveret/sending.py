"""The task sender: a task and its payload become a confirmed AMQP message, now or after a delay."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from leveret import delays as delays
from leveret import message
from leveret.amqp.connection import Connector
from leveret.amqp.publish import ConfirmPublisher
from leveret.amqp.topology import Names, QueueSpec, Topology
from leveret.errors import (
    BulkPublishError,
    InvalidArgument,
    PayloadInvalid,
    PayloadTooLarge,
    Unroutable,
)
from leveret.middleware import Emitter
from leveret.priorities import PriorityWatch
from leveret.settings import Settings
from leveret.task import M, Task

#: How many confirms ``send_many`` keeps in flight at once.
BULK_WINDOW = 1000


class SingleFlight:
    """Runs one setup per key at a time; callers that arrive meanwhile await that run.

    A burst of first sends on a fresh App would otherwise each open a channel and
    declare the same topology: 100 concurrent sends opened 100 channels and took
    seconds where a warm producer takes milliseconds. A failure reaches every caller
    of the run that failed and is not kept, so the next call tries again.
    """

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task[None]] = {}

    async def run(self, key: str, setup: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = self._running.get(key)
        if task is None:
            task = asyncio.create_task(setup())
            self._running[key] = task
            task.add_done_callback(partial(self._finished, key))
        # One caller cancelled must not cancel the run the others are waiting for.
        await asyncio.shield(task)

    def _finished(self, key: str, task: asyncio.Task[None]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # seen, even if every caller was cancelled before the end


@dataclass(frozen=True)
class Transport:
    """Where sends go: how to connect, publish with confirms and declare.

    RabbitMQ unless an App is bound to another (``App.bind``): the testing kit's
    in-memory broker subclasses these three and models RabbitMQ's semantics.
    """

    connector: Callable[..., Connector] = Connector
    publisher: Callable[[Connector, Settings], ConfirmPublisher] = ConfirmPublisher
    topology: Callable[[Settings], Topology] = Topology


RABBITMQ = Transport()


class TaskSender:
    """Sends tasks: validated, size-checked, persistent, confirmed."""

    def __init__(
        self,
        connector: Connector,
        settings: Settings,
        *,
        app_id: str | None,
        emitter: Emitter | None = None,
        specs: Mapping[str, QueueSpec] | None = None,
        transport: Transport = RABBITMQ,
    ) -> None:
        self.settings = settings
        #: The app's queue configurations (shared): which band a priority goes to.
        self.specs: Mapping[str, QueueSpec] = specs if specs is not None else {}
        self.priorities = PriorityWatch()
        #: Shared with the App: middleware added later is called too.
        self.emitter = emitter if emitter is not None else Emitter([])
        self.names = Names(settings.namespace)
        self.topology = transport.topology(settings)
        self.publisher = transport.publisher(connector, settings)
        self._connector = connector
        self._app_id = app_id
        self._declared = False
        self._known_queues: set[str] = set()
        self._setup = SingleFlight()

    async def ensure_core(self) -> None:
        """Declare the shared exchanges and delay ladder once per process."""
        if not self._declared:
            await self._setup.run("core", self._declare_core)

    async def _declare_core(self) -> None:
        connection = await self._connector.get()
        await self.topology.declare(connection, ())
        self._declared = True

    def core_declared(self) -> None:
        """Someone else declared the shared topology on this process's connection."""
        self._declared = True

    def encode(self, task: Task[M], payload: M) -> bytes:
        if not isinstance(payload, task.model):
            model = task.model.__name__
            raise PayloadInvalid(
                f"task {task.name!r} takes {model}, not {type(payload).__name__}: "
                f"pass {model}(...), or send a dict with app.send_by_name({task.name!r}, ...)"
            )
        body: bytes = payload.__pydantic_serializer__.to_json(payload)
        return self._checked_size(task.name, body)

    def _checked_size(self, name: str, body: bytes) -> bytes:
        if len(body) > self.settings.max_payload_bytes:
            raise PayloadTooLarge(
                f"task {name!r}: payload is {len(body)} bytes, over the limit of "
                f"{self.settings.max_payload_bytes}; send a reference (a URL or a key) "
                "instead of the data, or raise LEVERET_MAX_PAYLOAD_BYTES on every service"
            )
        return body

    def headers(
        self, extra: Mapping[str, Any] | None = None, *, attempt: int = 1
    ) -> dict[str, Any]:
        now = message.now_ms()
        headers: dict[str, Any] = {
            message.ATTEMPT: attempt,
            message.ENQUEUED_AT: now,
            message.PUBLISHED_AT: now,
        }
        if extra:
            headers.update(extra)
        return headers

    async def send_body(
        self,
        *,
        name: str,
        queue: str,
        body: bytes,
        priority: int,
        task_id: str | None = None,
        delay: timedelta | float | None = None,
        at: datetime | None = None,
        headers: dict[str, Any] | None = None,
    ) -> str:
        """Publish an encoded task and wait for its confirm; return the task id."""
        self.check_priority(priority)
        seconds = _delay_seconds(delay, at)
        if seconds:
            self.delay_units(seconds)  # a wrong argument is refused before connecting
        if not self._declared:
            await self.ensure_core()
        task_id = task_id or uuid.uuid4().hex
        exchange, key = await self.route(queue, seconds, priority)
        if headers is None:
            headers = self.headers()
        emitter = self.emitter
        if emitter:
            emitter.before_send(name, queue, headers)
        props = message.properties(
            task_name=name, task_id=task_id, priority=priority, headers=headers, app_id=self._app_id
        )
        if not emitter:
            await self.publisher.publish(exchange, key, body, props)
            return task_id
        try:
            await self.publisher.publish(exchange, key, body, props)
        except BaseException as exc:
            emitter.after_send(name, queue, task_id, len(body), exc)
            raise
        emitter.after_send(name, queue, task_id, len(body), None)
        return task_id

    def check_options(
        self, priority: int, delay: timedelta | float | None, at: datetime | None
    ) -> None:
        """Refuse a priority, delay or time a send could not use, without connecting."""
        self.check_priority(priority)
        seconds = _delay_seconds(delay, at)
        if seconds:
            self.delay_units(seconds)

    def check_priority(self, priority: int) -> None:
        if not 0 <= priority <= self.settings.max_priority:
            raise InvalidArgument(
                f"priority must be 0..{self.settings.max_priority}, got {priority}: the work "
                "queues' x-max-priority (LEVERET_MAX_PRIORITY) is the highest RabbitMQ honours"
            )

    def delay_units(self, delay_seconds: float) -> int:
        """The delay in units of the ladder; refused if the ladder cannot hold it."""
        units = delays.to_units(delay_seconds, self.settings.delay_unit_ms)
        if units >= 2**self.settings.delay_levels:
            raise InvalidArgument(
                f"a delay of {delay_seconds:.0f} s is over the longest the delay levels "
                f"allow ({self.settings.max_delay_seconds:.0f} s): keep a wait that long "
                "outside RabbitMQ (a scheduler or a database row) and send the task nearer "
                "its time"
            )
        return units

    async def route(self, queue: str, delay_seconds: float, priority: int = 0) -> tuple[str, str]:
        """Exchange and routing key for a message to ``queue`` after a delay.

        On a queue with priority bands, the key names the band of ``priority``.
        """
        spec = self.specs.get(queue)
        if spec is not None:
            if priority:
                self.priorities.check(spec, (priority,))
            queue = spec.band(priority)
        units = self.delay_units(delay_seconds)
        if units == 0:
            return self.names.tasks_exchange, queue
        levels = self.settings.delay_levels
        if queue not in self._known_queues:
            await self._setup.run(f"queue:{queue}", partial(self._check_queue, queue))
        level = delays.entry_level(units)
        return self.names.delay_level(level), delays.routing_key(units, levels, queue)

    async def _check_queue(self, queue: str) -> None:
        """A delayed message to a missing queue would only be parked on arrival: refuse now."""
        connection = await self._connector.get()
        if not await self.topology.queue_exists(connection, queue):
            raise Unroutable(
                f"queue {queue!r} does not exist: start a worker for it first, "
                "or declare it with `leveret declare`."
            )
        self._known_queues.add(queue)

    async def send(
        self,
        task: Task[M],
        payload: M,
        *,
        priority: int | None = None,
        delay: timedelta | float | None = None,
        at: datetime | None = None,
        task_id: str | None = None,
    ) -> str:
        return await self.send_body(
            name=task.name,
            queue=task.queue,
            body=self.encode(task, payload),
            priority=task.priority if priority is None else priority,
            task_id=task_id,
            delay=delay,
            at=at,
        )

    async def send_many(
        self,
        task: Task[M],
        payloads: Iterable[M],
        *,
        priority: int | None = None,
        delay: timedelta | float | None = None,
    ) -> list[str]:
        """Send many with up to ``BULK_WINDOW`` confirms in flight; all or an error.

        The window slides: ``BULK_WINDOW`` lanes each send the next message as soon as
        their last one is confirmed, so the pipe never drains between windows.
        """
        prio = task.priority if priority is None else priority
        # Refused once, before anything is sent, not once per message.
        self.check_priority(prio)
        self.delay_units(_delay_seconds(delay, None))
        bodies = [self.encode(task, p) for p in payloads]
        ids = [uuid.uuid4().hex for _ in bodies]
        errors: dict[int, Exception] = {}
        pending = iter(range(len(bodies)))

        async def lane() -> None:
            for i in pending:
                try:
                    await self.send_body(
                        name=task.name,
                        queue=task.queue,
                        body=bodies[i],
                        priority=prio,
                        task_id=ids[i],
                        delay=delay,
                    )
                except Exception as exc:
                    errors[i] = exc

        await asyncio.gather(*(lane() for _ in range(min(BULK_WINDOW, len(bodies)))))
        if errors:
            sent = [task_id for i, task_id in enumerate(ids) if i not in errors]
            raise BulkPublishError(sent, sorted(errors.items()))
        return ids

    async def close(self) -> None:
        await self.publisher.close()


def _delay_seconds(delay: timedelta | float | None, at: datetime | None) -> float:
    if delay is not None and at is not None:
        raise InvalidArgument("give either delay= (how long from now) or at= (when), not both")
    if at is not None:
        if at.tzinfo is None:
            raise InvalidArgument(
                "`at` must be timezone-aware, e.g. datetime.now(UTC) + timedelta(minutes=5): "
                "a naive time could mean any zone"
            )
        return max((at - datetime.now(tz=UTC)).total_seconds(), 0.0)
    if delay is None:
        return 0.0
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    if seconds < 0:
        raise InvalidArgument(f"delay must be >= 0 seconds, got {seconds}: use 0 to send now")
    return seconds
