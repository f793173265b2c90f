"""Hooks around each task, for metrics, logs and error reporting.

Each hook is a no-op named for when it runs; subclass and override what you need.
They run on the worker's event loop for every task, so keep them cheap.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from broker.task import TaskContext


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
