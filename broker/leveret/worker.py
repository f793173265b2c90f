"""The worker: supervises a connection and a consumer per queue; the delivery
pipeline (``leveret.delivery``) turns each delivery into a settled outcome.

A lost connection or a consumer cancelled by the broker is re-established without
restarting the process; a stop request lets running tasks finish within a grace
period and requeues the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from leveret.amqp import AMQPError, ChannelAccessRefused, ChannelError, Connection
from leveret.amqp.connection import CONNECTION_ERRORS, is_open, worker_identity
from leveret.amqp.consume import Process, QueueConsumer
from leveret.amqp.topology import access_refused
from leveret.app import App
from leveret.bands import BandGate
from leveret.delivery import DeliveryPipeline
from leveret.errors import (
    BrokerUnavailable,
    ConfigError,
)

log = logging.getLogger(__name__)

#: Key of ``TaskContext.state`` holding the body's size in bytes (set for middleware).
BODY_SIZE = "body_size"


class Worker:
    """Runs the tasks of one app from some of its queues."""

    def __init__(
        self,
        app: App,
        *,
        queues: list[str] | None = None,
        concurrency: int = 32,
        shutdown_timeout: float = 30.0,
    ) -> None:
        if concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        served = sorted({r.task.queue for r in app.registry.values()})
        self.queues = list(queues) if queues else served
        if not self.queues:
            raise ConfigError("the app has no task handlers: nothing for a worker to run")
        unknown = [q for q in self.queues if q not in served]
        if unknown:
            raise ConfigError(
                f"no task of this app is routed to queue(s) {', '.join(unknown)}; "
                f"queues with handlers: {', '.join(served) or 'none'}"
            )
        self.app = app
        self.settings = app.settings
        self.concurrency = concurrency
        self.shutdown_timeout = shutdown_timeout
        self.identity = worker_identity()
        #: By the short name of the queue consumed: a queue, or one of its priority bands.
        self.consumers: dict[str, QueueConsumer] = {}
        #: Each queue (short name) with priority bands, highest first, and their gate.
        self.bands = {q: app.queue_spec(q).bands for q in self.queues}
        self.gates = {
            q: BandGate(bands, lambda band: self.consumers.get(band))
            for q, bands in self.bands.items()
            if len(bands) > 1
        }
        self._retiring: set[asyncio.Task[None]] = set()
        self._check_timeouts()
        self._threads: ThreadPoolExecutor | None = None
        self._stop = asyncio.Event()
        self._connected = False
        self._sender = app.sender
        self.pipeline = DeliveryPipeline(
            app,
            identity=self.identity,
            queues=self.queues,
            stopping=self._stop,
            settle_acks=self._settle_acks,
        )

    @property
    def counts(self) -> Counter[str]:
        """Outcomes so far, by ``Outcome`` value."""
        return self.pipeline.counts

    @property
    def returned(self) -> Counter[tuple[str, str]]:
        """Deliveries that came back unsettled, by (queue, what was done)."""
        return self.pipeline.poison.returned

    def _check_timeouts(self) -> None:
        limit = self.settings.consumer_timeout
        for reg in self.app.registry.values():
            timeout = reg.timeout or self.settings.task_timeout
            if timeout >= limit:
                raise ConfigError(
                    f"task {reg.task.name!r} may run {timeout:.0f} s, but the broker's "
                    f"consumer_timeout is {limit:.0f} s: RabbitMQ would cancel it and redeliver "
                    "a healthy task. Lower the task's timeout, or raise consumer_timeout on "
                    "the broker and LEVERET_CONSUMER_TIMEOUT to match."
                )

    # -- state ----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Connected, and every queue has a live consumer."""
        return (
            self._connected
            and not self._stop.is_set()
            and len(self.consumers) == sum(len(b) for b in self.bands.values())
            and all(c.subscribed for c in self.consumers.values())
        )

    @property
    def in_flight(self) -> int:
        return sum(c.acker.in_flight for c in self.consumers.values() if c.acker)

    def request_stop(self) -> None:
        """Stop taking tasks; running ones finish within the shutdown timeout."""
        self._stop.set()

    # -- supervision ----------------------------------------------------------------

    async def run(self) -> None:
        """Consume until ``request_stop``; reconnect and re-subscribe on any loss."""
        self._threads = ThreadPoolExecutor(self.concurrency, thread_name_prefix="leveret-task")
        self.pipeline.time_limits.threads = self._threads
        self._sender._known_queues.update(self.queues)
        first = True
        pause = 0.0  # between attempts that fail after connecting (e.g. a declare)
        try:
            while not self._stop.is_set():
                try:
                    deadline = None if first else float("inf")
                    connection = await self._interruptible(
                        self.app.connector.get(deadline=deadline)
                    )
                    if connection is None:
                        break
                    await self.app.declare(self.queues)
                    await self._subscribe(connection)
                    self._connected = True
                    pause = 0.0
                    log.info(
                        "worker %s %s %s (concurrency %d)",
                        self.identity,
                        "consuming" if first else "reconnected; consuming again from",
                        ", ".join(self.queues),
                        self.concurrency,
                    )
                    first = False
                    await self._watch(connection)
                except BrokerUnavailable as exc:
                    if first:
                        raise
                    log.warning("%s", exc)
                except CONNECTION_ERRORS as exc:
                    log.warning("connection to RabbitMQ lost (%s); reconnecting", exc)
                finally:
                    self._connected = False
                if not self._stop.is_set():
                    await self._drop_consumers()
                    await self._sleep(pause)
                    pause = min(pause * 2 or 0.1, 5.0)
        finally:
            await self._shutdown()

    async def _interruptible(self, coro: Any) -> Connection | None:
        """Await ``coro`` unless a stop is requested first (then None)."""
        task = asyncio.ensure_future(coro)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done():
            return task.result()  # type: ignore[no-any-return]
        task.cancel()
        return None

    async def _subscribe(self, connection: Connection) -> None:
        """Start a consumer on every queue (and priority band) that has none subscribed.

        A band below the highest starts paused: its gate opens it when higher bands
        are idle.
        """
        for queue in self.queues:
            gate = self.gates.get(queue)
            for band in self.bands[queue]:
                await self._subscribe_one(connection, queue, band, gate)
            if gate is not None:
                gate.start()

    async def _subscribe_one(
        self, connection: Connection, queue: str, band: str, gate: BandGate | None
    ) -> None:
        consumer = self.consumers.get(band)
        if consumer is not None and consumer.subscribed:
            return
        if consumer is not None:
            del self.consumers[band]
            retire = asyncio.get_running_loop().create_task(self._retire(consumer))
            self._retiring.add(retire)
            retire.add_done_callback(self._retiring.discard)
        process: Process = partial(self.pipeline.process, queue=queue)
        if gate is not None:
            process = gate.wrap(band, process)
        name = self._sender.names.work_queue(band)
        consumer = QueueConsumer(name, self.concurrency, process)
        try:
            await consumer.start(connection, paused=gate is not None and band != gate.bands[0])
        except ChannelAccessRefused as exc:
            raise access_refused(exc, f"consume {band!r}", self.settings.namespace) from None
        self.consumers[band] = consumer

    async def _watch(self, connection: Connection) -> None:
        """Return when a stop is requested; re-subscribe lost consumers meanwhile.

        A consumer the broker cancelled (queue deleted, leader moved, consumer timeout)
        is subscribed again on its own channel; the others carry on undisturbed. The
        worker is not ready until every queue has a consumer again.
        """
        pause = 0.1
        while not self._stop.is_set():
            if not is_open(connection):
                raise ConnectionError("connection closed")
            if not self.ready:
                try:
                    await self._subscribe(connection)
                except ChannelError as exc:
                    if not is_open(connection):
                        raise ConnectionError("connection closed") from exc
                    log.warning(
                        "cannot consume from %s (%s); retrying in %.1f s. If the queue was "
                        "deleted, declare it again (`leveret declare`) or restart the worker.",
                        ", ".join(q for q in self.queues if q not in self.consumers),
                        exc,
                        pause,
                    )
                    await self._sleep(pause)
                    pause = min(pause * 2, 5.0)
                    continue
                pause = 0.1
            waits = [asyncio.ensure_future(self._stop.wait())]
            waits += [asyncio.ensure_future(c.lost.wait()) for c in self.consumers.values()]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when a stop is requested."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _retire(self, consumer: QueueConsumer) -> None:
        """Let a cancelled consumer's running tasks finish, then close its channel."""
        if consumer.acker is not None:
            await consumer.acker.wait_idle(self.shutdown_timeout)
        await consumer.close()

    async def _settle_acks(self) -> None:
        """Send the pending acks and wait until RabbitMQ has processed them.

        A broker handles a channel's frames in order, so the answer to a ``basic.qos``
        sent after the acks means the acks were taken.
        """
        for consumer in list(self.consumers.values()):
            channel, acker = consumer.channel, consumer.acker
            if channel is None or acker is None or channel.is_closed:
                continue
            acker.flush()
            try:
                await channel.basic_qos(prefetch_count=consumer.prefetch, timeout=5)
            except (AMQPError, TimeoutError, ConnectionError) as exc:
                log.debug("could not confirm the acks on %s: %s", consumer.queue, exc)

    async def _drop_consumers(self) -> None:
        consumers, self.consumers = list(self.consumers.values()), {}
        for consumer in consumers:
            await consumer.close()

    async def _shutdown(self) -> None:
        for gate in self.gates.values():
            await gate.stop()
        consumers = list(self.consumers.values())
        for consumer in consumers:
            await consumer.stop_consuming()
        running = self.in_flight
        if running:
            log.info("waiting up to %.0f s for %d running tasks", self.shutdown_timeout, running)
        deadline = time.monotonic() + self.shutdown_timeout
        for consumer in consumers:
            if consumer.acker is not None:
                await consumer.acker.wait_idle(max(deadline - time.monotonic(), 0))
        if self._retiring:
            await asyncio.wait(set(self._retiring), timeout=max(deadline - time.monotonic(), 0))
        left = self.in_flight
        if left:
            log.warning("%d tasks still running after the shutdown timeout: requeueing them", left)
        await self._drop_consumers()
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
