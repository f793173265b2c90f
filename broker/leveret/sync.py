"""Sending from sync code: ``app.sync.send(task, payload)`` blocks until RabbitMQ confirms.

Typed like the async API and backed by it: one event loop in a background thread per
process owns the connection, and each call from any thread runs there as a coroutine,
so the confirms, errors, deadlines and options are those of ``App.send``. It connects on
the first send, starts afresh in a forked child (gunicorn ``--preload``) and closes at
interpreter exit.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from leveret.amqp.connection import Connector
from leveret.loop_thread import LoopThread
from leveret.middleware import Emitter
from leveret.sending import TaskSender
from leveret.settings import Settings
from leveret.task import M, Task


@dataclass(frozen=True)
class _Producer:
    """A connection and the sender publishing on it, both on the background loop."""

    connector: Connector
    sender: TaskSender

    async def close(self) -> None:
        await self.sender.close()
        await self.connector.close()


class SyncSender:
    """The blocking face of an App's sending; safe to share between threads."""

    def __init__(self, settings: Settings, *, app_id: str | None, emitter: Emitter) -> None:
        self.settings = settings
        self._app_id = app_id
        self._emitter = emitter
        # Checks arguments without a connection: same rules, no I/O.
        self._checker = TaskSender(Connector(settings), settings, app_id=app_id, emitter=emitter)
        self._loop = LoopThread(f"leveret-sync-{app_id or 'app'}", self._open, _Producer.close)

    def _open(self) -> _Producer:
        name = f"{self._app_id or 'leveret'}-sync-{os.getpid()}"
        connector = Connector(self.settings, name=name)
        sender = TaskSender(connector, self.settings, app_id=self._app_id, emitter=self._emitter)
        return _Producer(connector, sender)

    def send(
        self,
        task: Task[M],
        payload: M,
        *,
        priority: int | None = None,
        delay: timedelta | float | None = None,
        at: datetime | None = None,
        task_id: str | None = None,
    ) -> str:
        """Send a task; returns its id once RabbitMQ has confirmed it (see ``App.send``)."""
        body = self._checker.encode(task, payload)  # a wrong payload fails in this thread
        prio = task.priority if priority is None else priority
        return self._loop.call(
            lambda p: p.sender.send_body(
                name=task.name,
                queue=task.queue,
                body=body,
                priority=prio,
                task_id=task_id,
                delay=delay,
                at=at,
            )
        )

    def send_many(
        self,
        task: Task[M],
        payloads: Iterable[M],
        *,
        priority: int | None = None,
        delay: timedelta | float | None = None,
    ) -> list[str]:
        """Send many tasks with their confirms in flight together (see ``App.send_many``)."""
        batch = list(payloads)
        return self._loop.call(
            lambda p: p.sender.send_many(task, batch, priority=priority, delay=delay)
        )

    def check(
        self,
        task: Task[M],
        payload: M,
        *,
        priority: int | None = None,
        delay: timedelta | float | None = None,
        at: datetime | None = None,
    ) -> None:
        """Refuse now what ``send`` would refuse before publishing; no connection needed.

        For sends that happen later (after a commit): a wrong payload, priority or delay
        then fails where the caller can still roll back.
        """
        self._checker.encode(task, payload)
        self._checker.check_options(task.priority if priority is None else priority, delay, at)

    @property
    def started(self) -> bool:
        """Whether this process has a background loop (it starts on the first send)."""
        return self._loop.started

    def close(self, timeout: float | None = 30.0) -> None:
        """Let sends under way finish, close the connection and stop the loop thread.

        Called at interpreter exit; a send after it starts a new loop.
        """
        self._loop.close(timeout)
