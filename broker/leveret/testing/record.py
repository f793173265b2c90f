"""What a test asserts on: every send, every run and every rejection, in order.

A middleware records them, so the in-memory kit and the real-broker harness record
exactly alike: the runtime calls the same hooks on both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from leveret.middleware import Middleware, Outcome
from leveret.task import TaskContext


@dataclass(frozen=True)
class Sent:
    """A send that was confirmed (or, with ``error``, refused)."""

    task: str
    queue: str
    task_id: str
    at: float
    error: BaseException | None = None


@dataclass(frozen=True)
class Run:
    """One attempt of a task: which, when (seconds on the harness clock), how it ended."""

    task: str
    task_id: str
    queue: str
    attempt: int
    outcome: Outcome | str
    error: BaseException | None
    at: float
    redelivered: bool
    headers: dict[str, Any]


@dataclass(frozen=True)
class Rejection:
    """A delivery no task could run, dead-lettered at once."""

    queue: str
    reason: str
    error: BaseException
    at: float


class Recorder(Middleware):
    """Keeps what the hooks report, stamped with the harness clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.sent: list[Sent] = []
        self.runs: list[Run] = []
        self.rejections: list[Rejection] = []

    def after_send(
        self, task_name: str, queue: str, task_id: str, size: int, error: BaseException | None
    ) -> None:
        self.sent.append(Sent(task_name, queue, task_id, self._clock(), error))

    def after_task(
        self, ctx: TaskContext, outcome: Outcome, error: BaseException | None, duration: float
    ) -> None:
        self.runs.append(run_of(ctx, outcome, error, self._clock()))

    def on_rejected(self, queue: str, reason: str, error: BaseException) -> None:
        self.rejections.append(Rejection(queue, str(reason), error, self._clock()))


def run_of(ctx: TaskContext, outcome: Outcome | str, error: BaseException | None, at: float) -> Run:
    return Run(
        task=ctx.name,
        task_id=ctx.task_id,
        queue=ctx.queue,
        attempt=ctx.attempt,
        outcome=outcome,
        error=error,
        at=at,
        redelivered=ctx.redelivered,
        headers=dict(ctx.headers),
    )
