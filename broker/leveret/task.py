"""Tasks: a typed contract (name, model, queue) and, on workers, its handler.

A producer needs only the contract, so services that send a task never import the
code that runs it::

    send_receipt = Task("emails.send_receipt", Receipt, queue="emails")

A worker attaches a handler with ``App.handle(send_receipt)``, or defines both at
once with ``App.task``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from leveret.errors import ConfigError
from leveret.retry import RetryPolicy

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, eq=False)
class Task(Generic[M]):
    """The contract of a task: what a producer needs to send it."""

    name: str
    model: type[M]
    queue: str = "default"
    priority: int = 0

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 255:
            raise ConfigError(f"task name {self.name!r} must be 1 to 255 characters")
        if not (isinstance(self.model, type) and issubclass(self.model, BaseModel)):
            raise ConfigError(f"task {self.name!r}: model must be a pydantic BaseModel subclass")
        if not 0 <= self.priority <= 255:
            raise ConfigError(f"task {self.name!r}: priority must be 0..255")

    def json_schema(self) -> dict[str, Any]:
        """The payload's JSON Schema, for producers in other languages."""
        schema = self.model.model_json_schema()
        schema.setdefault("title", self.name)
        return schema


@dataclass(slots=True)
class TaskContext:
    """What a handler may want to know about the run it is in.

    ``task_id`` stays the same across retries and replays: use it to make handlers
    idempotent. ``redelivered`` is set when an earlier delivery of this task was
    not acknowledged (a worker died or lost its connection mid-task), and
    ``delivery_count`` says how many times that happened (None if never).
    """

    task_id: str
    name: str
    queue: str
    attempt: int
    redelivered: bool
    headers: Mapping[str, Any]
    published_at_ms: int | None = None
    enqueued_at_ms: int | None = None
    delivery_count: int | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def enqueued_at(self) -> datetime | None:
        """When the task was first sent (kept across retries)."""
        if self.enqueued_at_ms is None:
            return None
        return datetime.fromtimestamp(self.enqueued_at_ms / 1000, tz=UTC)


Handler = Callable[..., Any]


@dataclass(frozen=True, eq=False)
class Registration:
    """A task with what a worker needs to run it."""

    task: Task[Any]
    handler: Handler
    retry: RetryPolicy
    timeout: float | None
    is_async: bool
    takes_context: bool

    def call(self, payload: BaseModel, ctx: TaskContext) -> Any:
        if self.takes_context:
            return self.handler(payload, ctx)
        return self.handler(payload)


def registration(
    task: Task[Any], handler: Handler, retry: RetryPolicy, timeout: float | None
) -> Registration:
    """Check a handler's shape once, at import time, not per message."""
    if not callable(handler):
        raise ConfigError(f"handler for task {task.name!r} is not callable")
    params = [
        p
        for p in inspect.signature(handler).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not 1 <= len(params) <= 2:
        raise ConfigError(
            f"handler {handler.__qualname__} for task {task.name!r} must take "
            "(payload) or (payload, ctx)"
        )
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"task {task.name!r}: timeout must be > 0 seconds")
    is_async = inspect.iscoroutinefunction(handler)
    return Registration(task, handler, retry, timeout, is_async, len(params) == 2)


def model_of(handler: Handler) -> type[BaseModel]:
    """The pydantic model a handler's first parameter is annotated with."""
    hints = typing.get_type_hints(handler)
    params = list(inspect.signature(handler).parameters)
    model = hints.get(params[0]) if params else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ConfigError(
            f"annotate the first parameter of {handler.__qualname__} with the task's "
            "pydantic model (e.g. `async def handle(msg: Receipt)`), or use App.handle(task)"
        )
    return model
