"""What a test does with a harness, in memory or on RabbitMQ: one interface for both.

A test body written against ``Harness`` runs unchanged on the in-memory ``Kit`` and
on ``BrokerKit`` (a real RabbitMQ): send, let the worker run, move time on, and
assert on what ran, what was sent and what is in dead letters.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from leveret import message
from leveret.amqp import Properties
from leveret.app import App
from leveret.deadletter import DeadLetter
from leveret.errors import InvalidArgument
from leveret.middleware import Outcome
from leveret.task import M, Task
from leveret.testing.record import Recorder, Rejection, Run, Sent


class Harness:
    """An app bound to a broker (in memory or real) with a worker a test drives."""

    #: "memory" or "rabbitmq": for the rare assertion that must differ.
    kind = ""

    def __init__(self, app: App) -> None:
        self.app = app
        self.recorder = Recorder(lambda: self.now)

    # -- the clock ------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Seconds since the harness started (virtual in memory, real on RabbitMQ)."""
        raise NotImplementedError

    # -- what happened --------------------------------------------------------------

    @property
    def sent(self) -> list[Sent]:
        """Every send through the app, in order (retries and dead letters are not sends)."""
        return self.recorder.sent

    @property
    def runs(self) -> list[Run]:
        """Every attempt of every task, in the order they ended."""
        return self.recorder.runs

    @property
    def rejections(self) -> list[Rejection]:
        """Deliveries no task could run (unknown task, invalid payload, ...)."""
        return self.recorder.rejections

    def runs_of(self, task: Task[Any] | str) -> list[Run]:
        name = task if isinstance(task, str) else task.name
        return [r for r in self.runs if r.task == name]

    def outcomes(self, task: Task[Any] | str | None = None) -> list[Outcome | str]:
        """How each attempt ended, in order: ``[RETRIED, RETRIED, SUCCEEDED]``."""
        runs = self.runs if task is None else self.runs_of(task)
        return [r.outcome for r in runs]

    async def dead_letters(self, **criteria: Any) -> list[DeadLetter]:
        """Dead letters of the app's queues matching the criteria of
        ``leveret.deadletter.Filter`` (``queue=``, ``task=``, ``reason=``, ...)."""
        raise NotImplementedError

    async def replay(self, **criteria: Any) -> int:
        """Send matching dead letters back to their queue, as ``leveret dlq replay``
        does; returns how many. Run them with ``run_until_idle``."""
        raise NotImplementedError

    # -- doing ----------------------------------------------------------------------

    async def send(self, task: Task[M], payload: M, **options: Any) -> str:
        """``app.send``: validated and encoded exactly as on the wire."""
        return await self.app.send(task, payload, **options)

    async def publish(
        self,
        task: str,
        args: Mapping[str, Any] | BaseModel | bytes,
        *,
        queue: str,
        headers: Mapping[str, Any] | None = None,
        priority: int | None = None,
        task_id: str | None = None,
    ) -> str:
        """Publish as another service would, with nothing checked: a task this app does
        not know, arguments its model refuses, bytes that are not JSON, any headers."""
        if isinstance(args, bytes):
            body = args
        elif isinstance(args, BaseModel):
            body = args.model_dump_json().encode()
        else:
            body = json.dumps(dict(args)).encode()
        task_id = task_id or uuid.uuid4().hex
        props = message.properties(
            task_name=task,
            task_id=task_id,
            priority=priority or 0,
            headers={**self.app.sender.headers(), **(headers or {})},
            app_id="leveret-testing",
        )
        await self._publish_raw(self.app.sender.names.tasks_exchange, queue, body, props)
        return task_id

    async def _publish_raw(
        self, exchange: str, routing_key: str, body: bytes, properties: Properties
    ) -> None:
        raise NotImplementedError

    async def run_until_idle(self) -> int:
        """Run every task that is ready now, and what they lead to that is ready now;
        returns how many deliveries the worker handled."""
        raise NotImplementedError

    async def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``, running each task as it comes due."""
        raise NotImplementedError

    async def drain(self, within: float = 3600.0) -> None:
        """Run until nothing is left to run or waiting in a delay, moving time on as
        needed, but at most ``within`` seconds of it."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Harness:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def check_seconds(seconds: float) -> float:
    seconds = float(seconds)
    if not seconds >= 0:
        raise InvalidArgument(
            f"cannot advance the clock by {seconds:g} s: time only moves forward "
            "(advance by 0 or more seconds)"
        )
    return seconds
