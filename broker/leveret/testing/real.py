"""The same harness on a real RabbitMQ: a throwaway namespace and an in-process worker.

The app is bound to a namespace of its own on the broker found the usual way
(``leveret.ops.discovery.find_broker``), its topology declared; everything in that
namespace is deleted on ``close``. The worker runs only while the test asks it to
(``run_until_idle``, ``advance``, ``drain``), so sends made before wait in their
queue exactly as they do in memory. RabbitMQ's clock cannot be moved: ``advance``
sleeps, and delayed messages arrive a few ms late (``LATE_MARGIN``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from leveret.amqp import Properties
from leveret.amqp.reader import count_ready
from leveret.app import App
from leveret.deadletter import DeadLetter, DeadLetters
from leveret.sending import RABBITMQ, Transport
from leveret.settings import Settings
from leveret.testing.harness import Harness, check_seconds
from leveret.testing.kit import KitError
from leveret.worker import Worker

#: Extra time ``advance`` waits for messages the delay ladder delivers late.
LATE_MARGIN = 0.3

#: How often, and how many times in a row, the worker must look idle to be idle.
POLL = 0.05
QUIET_POLLS = 3


def fresh_namespace() -> str:
    return f"kit{uuid.uuid4().hex[:10]}"


class BrokerKit(Harness):
    """An App bound to a throwaway namespace of a real RabbitMQ."""

    kind = "rabbitmq"

    def __init__(
        self,
        app: App,
        url: str,
        *,
        namespace: str | None = None,
        queues: list[str] | None = None,
        concurrency: int = 1,
    ) -> None:
        super().__init__(app)
        self.url = url
        self.namespace = namespace or fresh_namespace()
        self.queues = queues
        self.concurrency = concurrency
        self._started = time.monotonic()
        self._saved: tuple[Transport, Settings] | None = None
        self._worker: Worker | None = None
        self._running: asyncio.Task[None] | None = None

    @property
    def now(self) -> float:
        return time.monotonic() - self._started

    async def start(self) -> BrokerKit:
        app = self.app
        if self._saved is None:
            await app.close()
            self._saved = (app.transport, app.settings)
            settings = app.settings.model_copy(
                update={"url": self.url, "namespace": self.namespace}
            )
            app.bind(RABBITMQ, settings=settings)
            app.middleware.append(self.recorder)
            self._started = time.monotonic()
        await app.declare()
        return self

    async def __aenter__(self) -> BrokerKit:
        return await self.start()

    async def close(self) -> None:
        """Stop the worker, delete the namespace, bind the app back as it was."""
        if self._saved is None:
            return
        await self._stop_worker()
        app = self.app
        try:
            connection = await app.connector.get()
            await app.sender.topology.delete_on(connection, sorted(app.queues))
        finally:
            await app.close()
            transport, settings = self._saved
            self._saved = None
            if self.recorder in app.middleware:
                app.middleware.remove(self.recorder)
            app.bind(transport, settings=settings)

    # -- the worker -----------------------------------------------------------------

    async def _start_worker(self) -> Worker:
        if self._saved is None:
            raise KitError("the broker kit is not started: use `async with BrokerKit(...)`")
        if self._worker is None:
            worker = Worker(
                self.app, queues=self.queues, concurrency=self.concurrency, shutdown_timeout=5
            )
            self._worker = worker
            self._running = asyncio.create_task(worker.run())
            while not worker.ready:
                if self._running.done():
                    await self._running  # raises what stopped it
                await asyncio.sleep(0.01)
        return self._worker

    async def _stop_worker(self) -> None:
        worker, running = self._worker, self._running
        self._worker = self._running = None
        if worker is not None and running is not None:
            worker.request_stop()
            await running

    async def _idle(self, worker: Worker) -> bool:
        connection = await self.app.connector.get()
        names = self.app.sender.names
        for queue in worker.queues:
            if await count_ready(connection, names.work_queue(queue)):
                return False
        return worker.in_flight == 0

    async def _wait_idle(self, worker: Worker) -> None:
        quiet = 0
        while quiet < QUIET_POLLS:
            await asyncio.sleep(POLL)
            quiet = quiet + 1 if await self._idle(worker) else 0

    async def run_until_idle(self) -> int:
        worker = await self._start_worker()
        before = sum(worker.counts.values())
        await self._wait_idle(worker)
        handled = sum(worker.counts.values()) - before
        await self._stop_worker()
        return handled

    async def advance(self, seconds: float) -> None:
        seconds = check_seconds(seconds)
        worker = await self._start_worker()
        await asyncio.sleep(seconds + LATE_MARGIN)
        await self._wait_idle(worker)
        await self._stop_worker()

    async def drain(self, within: float = 3600.0) -> None:
        worker = await self._start_worker()
        deadline = time.monotonic() + check_seconds(within)
        connection = await self.app.connector.get()
        names = self.app.sender.names
        levels = [names.delay_level(k) for k in range(self.app.settings.delay_levels)]
        clean = 0  # a message between two levels is in no queue: look twice
        while clean < 2:
            await self._wait_idle(worker)
            waiting = [await count_ready(connection, level) for level in levels]
            clean = 0 if any(waiting) else clean + 1
            if clean == 0 and time.monotonic() > deadline:
                raise KitError(f"still waiting after {within:g} s: messages in the delay levels")
        await self._stop_worker()

    # -- dead letters ---------------------------------------------------------------

    async def dead_letters(self, **criteria: Any) -> list[DeadLetter]:
        async with DeadLetters(self.app) as letters:
            return await letters.letters(criteria, limit=None)

    async def replay(self, **criteria: Any) -> int:
        async with DeadLetters(self.app) as letters:
            report = await letters.replay(criteria)
        return report.moved

    async def _publish_raw(
        self, exchange: str, routing_key: str, body: bytes, properties: Properties
    ) -> None:
        await self.app.sender.publisher.publish(exchange, routing_key, body, properties)
