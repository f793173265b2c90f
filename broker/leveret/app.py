"""The App: the registry of tasks and the way to send them.

There is no global state: services create an ``App``, producers call ``send`` on it,
and the worker is given it (``leveret worker module:app``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Concatenate

from pydantic import BaseModel

from leveret.amqp.connection import Connector
from leveret.amqp.topology import Overflow, QueueSpec
from leveret.errors import ConfigError, PayloadInvalid, TaskNotFound
from leveret.middleware import Emitter, Middleware
from leveret.priorities import default_bands
from leveret.retry import RetryPolicy
from leveret.sending import RABBITMQ, TaskSender, Transport
from leveret.settings import QueueType, Settings
from leveret.sync import SyncSender
from leveret.task import M, Registration, Task, model_of, registration

HandlerOf = Callable[Concatenate[M, ...], Any]

DEFAULT_RETRY = RetryPolicy()


class App:
    """Tasks, queues and a connection: everything a producer or worker shares."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        app_id: str | None = None,
        middleware: Iterable[Middleware] = (),
        **overrides: Any,
    ) -> None:
        if settings is not None and overrides:
            raise ConfigError("pass either a Settings object or keyword settings, not both")
        self.settings = settings or Settings(**overrides)
        self.app_id = app_id
        self.middleware: list[Middleware] = list(middleware)
        #: Calls the middleware's hooks; what a hook raises is logged and counted there.
        self.emitter = Emitter(self.middleware)
        self.registry: dict[str, Registration] = {}
        self.contracts: dict[str, Task[Any]] = {}
        self.queues: dict[str, QueueSpec] = {}
        self.transport = RABBITMQ
        self.connector = Connector(self.settings, name=app_id or "leveret")
        self._sender: TaskSender | None = None
        self._sync: SyncSender | None = None

    # -- defining -----------------------------------------------------------------

    def queue(
        self,
        name: str,
        *,
        type: QueueType | None = None,
        max_priority: int | None = None,
        delivery_limit: int | None = 10,
        max_length: int | None = None,
        overflow: Overflow | None = None,
        priority_bands: tuple[int, ...] | None = None,
    ) -> QueueSpec:
        """Configure a work queue before it is first declared (its arguments then stick).

        ``priority_bands`` makes strict priorities on quorum queues: one queue per band
        (``(5,)``: 0-4 and 5 up), drained highest band first (README: 'Priorities').
        Quorum queues default to ``LEVERET_PRIORITY_BANDS``.
        """
        queue_type = type or self.settings.queue_type
        if priority_bands is None:
            priority_bands = default_bands(self.settings, queue_type)
        spec = QueueSpec(
            name=name,
            type=queue_type,
            max_priority=max_priority or self.settings.max_priority,
            delivery_limit=delivery_limit,
            max_length=max_length,
            overflow=overflow,
            priority_bands=tuple(priority_bands),
        )
        self.queues[name] = spec
        return spec

    def queue_spec(self, name: str) -> QueueSpec:
        return self.queues.get(name) or self.queue(name)

    def add(self, task: Task[Any]) -> Task[Any]:
        """Make a contract known (for ``declare`` and sending by name) without a handler."""
        known = self.contracts.get(task.name)
        if known is not None and known is not task:
            raise ConfigError(f"two different tasks are named {task.name!r}")
        self.contracts[task.name] = task
        self.queue_spec(task.queue)
        return task

    def handle(
        self,
        task: Task[M],
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Callable[[HandlerOf[M]], HandlerOf[M]]:
        """Attach a handler (async, or sync run in a thread) to a task contract."""

        def attach(
            handler: HandlerOf[M],
        ) -> HandlerOf[M]:
            if task.name in self.registry:
                raise ConfigError(f"task {task.name!r} already has a handler")
            self.add(task)
            self.registry[task.name] = registration(task, handler, retry or DEFAULT_RETRY, timeout)
            return handler

        return attach

    def task(
        self,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Callable[[HandlerOf[M]], Task[M]]:
        """Define a task and its handler at once; the model is the first parameter's type."""

        def define(handler: HandlerOf[M]) -> Task[M]:
            model: type[M] = model_of(handler)  # type: ignore[assignment]
            task_name = name or f"{handler.__module__}.{handler.__qualname__}"
            contract = Task(task_name, model, queue=queue, priority=priority)
            self.handle(contract, retry=retry, timeout=timeout)(handler)
            return contract

        return define

    def registration(self, name: str) -> Registration:
        try:
            return self.registry[name]
        except KeyError:
            known = ", ".join(sorted(self.registry)) or "none"
            raise TaskNotFound(f"no handler for task {name!r} (registered: {known})") from None

    def priorities_on(self, queue: str) -> set[int]:
        """The default priorities of the tasks this app routes to ``queue``."""
        return {t.priority for t in self.contracts.values() if t.queue == queue}

    # -- sending ------------------------------------------------------------------

    @property
    def sender(self) -> TaskSender:
        if self._sender is None:
            self._sender = TaskSender(
                self.connector,
                self.settings,
                app_id=self.app_id,
                emitter=self.emitter,
                transport=self.transport,
                specs=self.queues,
            )
        return self._sender

    def bind(self, transport: Transport = RABBITMQ, *, settings: Settings | None = None) -> None:
        """Send through ``transport``, with ``settings`` if given, from the next send on.

        The testing kit binds an app to its in-memory broker, or to a throwaway
        namespace of a real one, and binds it back afterwards. Close the app first: the
        current connection is let go, not closed.
        """
        if settings is not None:
            self.settings = settings
        self.transport = transport
        self.connector = transport.connector(self.settings, name=self.app_id or "leveret")
        self._sender = None

    @property
    def sync(self) -> SyncSender:
        """Blocking ``send`` and ``send_many`` for sync code, safe from many threads.

        Its own connection, owned by a background event-loop thread started on the
        first send (and afresh in a forked child); closed at exit or by ``close()``.
        """
        if self._sync is None:
            self._sync = SyncSender(self.settings, app_id=self.app_id, emitter=self.emitter)
        return self._sync

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
        """Send a task; returns its id once RabbitMQ has confirmed it.

        Raises ``Unroutable`` if no queue is bound for it and ``NotConfirmed`` if the
        broker did not take it within ``publish_deadline``.
        """
        return await self.sender.send(
            task, payload, priority=priority, delay=delay, at=at, task_id=task_id
        )

    async def send_many(
        self,
        task: Task[M],
        payloads: Iterable[M],
        *,
        priority: int | None = None,
        delay: timedelta | float | None = None,
    ) -> list[str]:
        """Send many tasks with their confirms in flight together."""
        return await self.sender.send_many(task, payloads, priority=priority, delay=delay)

    async def send_by_name(
        self,
        name: str,
        args: dict[str, Any] | BaseModel,
        *,
        queue: str | None = None,
        priority: int = 0,
        delay: timedelta | float | None = None,
        at: datetime | None = None,
        task_id: str | None = None,
    ) -> str:
        """Send a task known only by name, its arguments as a dict.

        When the contract is known to this app, the arguments are validated against it
        before sending; otherwise the worker validates them and dead-letters on error.
        """
        contract = self.contracts.get(name)
        if contract is not None:
            if queue is not None and queue != contract.queue:
                raise ConfigError(
                    f"task {name!r} goes to queue {contract.queue!r} by its contract, not "
                    f"{queue!r}: a worker would dead-letter it there as misrouted. Drop "
                    "queue=..., or define the task on the queue you want."
                )
            try:
                model = contract.model.model_validate(args)
            except ValueError as exc:
                raise PayloadInvalid(f"arguments for task {name!r} are invalid: {exc}") from None
            return await self.send(
                contract, model, priority=priority, delay=delay, at=at, task_id=task_id
            )
        if queue is None:
            raise ConfigError(f"task {name!r} is not known to this app: pass queue=...")
        body = _json_bytes(name, args)
        producer = self.sender
        return await producer.send_body(
            name=name,
            queue=queue,
            body=producer._checked_size(name, body),
            priority=priority,
            task_id=task_id,
            delay=delay,
            at=at,
        )

    # -- lifecycle ----------------------------------------------------------------

    async def declare(self, queues: Iterable[str] | None = None) -> list[str]:
        """Declare the shared topology and the given (default: all known) work queues.

        Always declares, even if this process did before: a broker that lost its data
        (a new node, a deleted queue) gets everything back.
        """
        sender = self.sender
        names = list(queues) if queues is not None else sorted(self.queues)
        for name in names:
            sender.priorities.check(self.queue_spec(name), self.priorities_on(name))
        connection = await self.connector.get()
        await sender.topology.declare(connection, [self.queue_spec(name) for name in names])
        sender.core_declared()
        return names

    async def close(self) -> None:
        if self._sender is not None:
            await self._sender.close()
        await self.connector.close()
        if self._sync is not None and self._sync.started:
            await asyncio.to_thread(self._sync.close)

    async def __aenter__(self) -> App:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _json_bytes(name: str, args: dict[str, Any] | BaseModel) -> bytes:
    if isinstance(args, BaseModel):
        return args.__pydantic_serializer__.to_json(args)
    import json

    try:
        return json.dumps(args, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise PayloadInvalid(f"arguments for task {name!r} are not JSON: {exc}") from None
