"""Hooks around each task and each send, for metrics, logs, tracing and error reports.

Each hook is a no-op named for when it runs; subclass and override what you need.
All are plain (not async) methods called on the event loop, for every task or send,
so keep them cheap. An exception a hook raises is logged and counted
(``leveret_middleware_errors_total``) and changes nothing else: the task still runs,
its outcome is still settled once, and a confirmed send still returns.

=================================================  ==========================================
hook                                               runs
=================================================  ==========================================
``before_task(ctx)``                               a valid task is about to run its handler
``after_task(ctx, outcome, error, duration)``      an attempt ended and its outcome (retry
                                                   copy, dead letter) is confirmed; before
                                                   the ack
``on_rejected(queue, reason, error)``              a delivery no task can run was dead-lettered
``before_send(task_name, queue, headers)``         a message is about to be published; add
                                                   headers here (trace context)
``after_send(task_name, queue, task_id, size,      a send ended: confirmed if ``error`` is
error)``                                           None, else not sent
``before_store(task_name, queue, headers)``        a task is written to be sent later (the
                                                   outbox); add the context its send and
                                                   its run should continue (trace context)
=================================================  ==========================================
"""

from __future__ import annotations

import logging
from collections import Counter
from enum import StrEnum
from typing import Any

from leveret.task import TaskContext

log = logging.getLogger(__name__)

#: Key of ``TaskContext.state`` a middleware may set, in ``before_task``, to a dict of
#: headers the task's retry copy should carry (tracing links one attempt to the next).
RETRY_HEADERS = "retry_headers"


class Outcome(StrEnum):
    """How one attempt of a task ended."""

    SUCCEEDED = "succeeded"
    RETRIED = "retried"
    DEAD_LETTERED = "dead-lettered"  # attempts exhausted
    FAILED_PERMANENTLY = "failed-permanently"  # permanent error or invalid input
    ABANDONED = "abandoned"  # its outcome could not be published; the broker redelivers


class Middleware:
    """Base class: every hook does nothing."""

    def before_task(self, ctx: TaskContext) -> None:
        """A valid task is about to run."""

    def after_task(
        self,
        ctx: TaskContext,
        outcome: Outcome,
        error: BaseException | None,
        duration: float,
    ) -> None:
        """A task's attempt ended; its outcome is already confirmed by the broker."""

    def on_rejected(self, queue: str, reason: str, error: BaseException) -> None:
        """A message was dead-lettered before any task could run (bad input)."""

    def before_send(self, task_name: str, queue: str, headers: dict[str, Any]) -> None:
        """A task is about to be published; headers may be added (trace context)."""

    def after_send(
        self, task_name: str, queue: str, task_id: str, size: int, error: BaseException | None
    ) -> None:
        """A send ended: confirmed by the broker if ``error`` is None, else not sent."""

    def before_store(self, task_name: str, queue: str, headers: dict[str, Any]) -> None:
        """A task is written to be sent later, by another process (the outbox relay):
        add to its headers the context that send and the task's run should continue."""


class Emitter:
    """Calls a hook on every middleware; what a hook raises is logged and counted.

    A hook never changes what happens to a task: an exception from it is not a
    failed task, a requeue, a skipped handler or a failed send. ``errors`` counts the
    exceptions by (middleware class, hook) for the metrics.
    """

    def __init__(self, middleware: list[Middleware]) -> None:
        #: The App's list itself: middleware added later is called too.
        self.middleware = middleware
        self.errors: Counter[tuple[str, str]] = Counter()

    def __bool__(self) -> bool:
        return bool(self.middleware)

    def _failed(self, mw: Middleware, hook: str) -> None:
        name = type(mw).__name__
        self.errors[(name, hook)] += 1
        log.exception("middleware %s raised in %s; the task goes on unaffected", name, hook)

    def before_task(self, ctx: TaskContext) -> None:
        for mw in self.middleware:
            try:
                mw.before_task(ctx)
            except Exception:
                self._failed(mw, "before_task")

    def after_task(
        self, ctx: TaskContext, outcome: Outcome, error: BaseException | None, duration: float
    ) -> None:
        for mw in self.middleware:
            try:
                mw.after_task(ctx, outcome, error, duration)
            except Exception:
                self._failed(mw, "after_task")

    def on_rejected(self, queue: str, reason: str, error: BaseException) -> None:
        for mw in self.middleware:
            try:
                mw.on_rejected(queue, reason, error)
            except Exception:
                self._failed(mw, "on_rejected")

    def before_send(self, task_name: str, queue: str, headers: dict[str, Any]) -> None:
        for mw in self.middleware:
            try:
                mw.before_send(task_name, queue, headers)
            except Exception:
                self._failed(mw, "before_send")

    def after_send(
        self, task_name: str, queue: str, task_id: str, size: int, error: BaseException | None
    ) -> None:
        for mw in self.middleware:
            try:
                mw.after_send(task_name, queue, task_id, size, error)
            except Exception:
                self._failed(mw, "after_send")

    def before_store(self, task_name: str, queue: str, headers: dict[str, Any]) -> None:
        for mw in self.middleware:
            try:
                mw.before_store(task_name, queue, headers)
            except Exception:
                self._failed(mw, "before_store")
