"""The worker: consume, validate, run, and settle each task only once it is over.

Order of operations for each delivery (nothing is acknowledged before the step it
depends on is confirmed by the broker):

    success            handler returned                         -> ack
    retryable failure  retry copy (attempt+1) published, confirmed -> ack
    final failure      dead letter (with why) published, confirmed -> ack
    bad input          dead letter published, confirmed           -> ack
    outcome not confirmed (broker gone)                           -> requeue

Connections are supervised here: a lost connection or a consumer cancelled by the
broker is re-established without restarting the process.
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

import aiormq
from aio_pika.abc import AbstractConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic
from pydantic import BaseModel, ValidationError

from broker import deadlines, isolation, message, retry
from broker.amqp_table import ExactProperties
from broker.app import App
from broker.connection import CONNECTION_ERRORS, is_open, worker_identity
from broker.consumer import QueueConsumer, Settle
from broker.errors import (
    BrokerUnavailable,
    ConfigError,
    DeliveryLimitReached,
    MalformedMessage,
    PayloadTooLarge,
    PublishError,
    TaskNotFound,
    TaskTimeout,
)
from broker.middleware import Outcome
from broker.task import Registration, TaskContext
from broker.topology import access_refused

log = logging.getLogger("leveret.worker")

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
        self.counts: Counter[str] = Counter()
        #: Deliveries that came back unsettled, by (queue, what was done): ``ran-alone``,
        #: ``put-back`` (to wait for its turn) or ``counted`` (a classic queue's).
        self.returned: Counter[tuple[str, str]] = Counter()
        self.consumers: dict[str, QueueConsumer] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._check_timeouts()
        self._threads: ThreadPoolExecutor | None = None
        self._stop = asyncio.Event()
        self._connected = False
        self._producer = app.producer
        self._middleware = app.middleware
        self._max_bytes = self.settings.max_payload_bytes
        self._deadlines = deadlines.Deadlines()
        self._isolation = isolation.Isolation(self._stop, self._settle_acks)
        self._delivery_limits = {
            q: limit for q in self.queues if (limit := app.queue_spec(q).delivery_limit) is not None
        }

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
            and len(self.consumers) == len(self.queues)
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
        self._producer._known_queues.update(self.queues)
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

    async def _interruptible(self, coro: Any) -> AbstractConnection | None:
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

    async def _subscribe(self, connection: AbstractConnection) -> None:
        """Start a consumer on every queue that has none subscribed."""
        names = self._producer.names
        for queue in self.queues:
            consumer = self.consumers.get(queue)
            if consumer is not None and consumer.subscribed:
                continue
            if consumer is not None:
                del self.consumers[queue]
                retire = asyncio.get_running_loop().create_task(self._retire(consumer))
                self._retiring.add(retire)
                retire.add_done_callback(self._retiring.discard)
            consumer = QueueConsumer(
                names.work_queue(queue), self.concurrency, partial(self.process, queue=queue)
            )
            try:
                await consumer.start(connection)
            except aiormq.exceptions.ChannelAccessRefused as exc:
                raise access_refused(exc, f"consume {queue!r}", self.settings.namespace) from None
            self.consumers[queue] = consumer

    async def _watch(self, connection: AbstractConnection) -> None:
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
                except aiormq.exceptions.AMQPChannelError as exc:
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

    async def _drop_consumers(self) -> None:
        consumers, self.consumers = list(self.consumers.values()), {}
        for consumer in consumers:
            await consumer.close()

    async def _shutdown(self) -> None:
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

    # -- one delivery ---------------------------------------------------------------

    async def process(self, delivered: DeliveredMessage, *, queue: str) -> Settle:
        """Validate, run and settle one delivery. Never raises for bad input."""
        if self._stop.is_set():
            # Delivered after the stop, before the broker saw our cancel: give it back.
            return Settle.REQUEUE
        self._isolation.arrived()
        props = delivered.header.properties
        if not props.message_id:
            # Set before any copy is made, so retries and dead letters keep it.
            props.message_id = message.derived_task_id(props, delivered.body)
        headers = props.headers
        returns = message.returns(headers)
        redelivered = delivered.delivery.redelivered  # type: ignore[union-attr]
        uncounted = redelivered and not (headers and message.DELIVERY_COUNT in headers)
        if uncounted:
            returns += 1  # a classic queue only flags a redelivery: count it here
        if returns:
            return await self._process_returned(delivered, queue, returns, uncounted)
        return await self._process_in_turn(delivered, queue, 0)

    async def _process_in_turn(
        self, delivered: DeliveredMessage, queue: str, returns: int
    ) -> Settle:
        """Process, once no delivery runs alone in this process."""
        gate = self._isolation
        if not gate.busy:
            gate.begin()  # the common case, without a coroutine
        elif not await gate.enter():
            return Settle.REQUEUE  # stopping
        try:
            return await self._process(delivered, queue, returns)
        finally:
            gate.leave()

    async def _process_returned(
        self, delivered: DeliveredMessage, queue: str, returns: int, uncounted: bool
    ) -> Settle:
        """A delivery that came back unsettled: stop it at the limit, or run it alone.

        A redelivery the broker did not count (a classic queue's) is put back first, as a
        copy carrying the count: a second crash would otherwise look like the first.
        """
        limit = self._delivery_limits.get(queue)
        if limit is not None and returns > limit:
            over = DeliveryLimitReached(
                f"the task came back unsettled {returns} times (its worker died or lost its "
                f"connection before it ended), over the delivery limit of {limit} of queue "
                f"{queue!r}"
            )
            return await self._reject(delivered, queue, retry.DELIVERY_LIMIT, over)
        if uncounted:
            return await self._put_back(delivered, queue, returns, after=0.0, action="counted")
        if not isolation.runs_alone(returns, limit):
            return await self._process_in_turn(delivered, queue, returns)
        if self._isolation.busy:
            return await self._put_back(delivered, queue, returns)
        log.info(
            "task %s %s came back unsettled %d times: running it alone",
            delivered.header.properties.message_type,
            delivered.header.properties.message_id,
            returns,
        )
        async with self._isolation.alone() as alone:
            if alone:
                self.returned[(queue, "ran-alone")] += 1
                return await self._process(delivered, queue, returns)
        return await self._put_back(delivered, queue, returns)

    async def _put_back(
        self,
        delivered: DeliveredMessage,
        queue: str,
        returns: int,
        *,
        after: float = isolation.PUT_BACK_SECONDS,
        action: str = "put-back",
    ) -> Settle:
        """Requeue a copy that carries the return count, without counting a return."""
        props = delivered.header.properties
        headers = message.copy_headers(props.headers)
        headers[message.RETURNS] = returns
        headers[message.PUBLISHED_AT] = message.now_ms()
        self._isolation.begin()  # the lone delivery starts once this one is settled
        try:
            exchange, key = await self._producer.route(queue, after)
            await self._producer.publisher.publish(
                exchange, key, delivered.body, republished(props, headers)
            )
        except PublishError as exc:
            log.warning("could not put task %s back (%s); requeueing it", props.message_id, exc)
            return Settle.REQUEUE
        finally:
            self._isolation.leave()
        self.returned[(queue, action)] += 1
        return Settle.ACK

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
            except (aiormq.exceptions.AMQPError, TimeoutError, ConnectionError) as exc:
                log.debug("could not confirm the acks on %s: %s", consumer.queue, exc)

    async def _process(self, delivered: DeliveredMessage, queue: str, returns: int) -> Settle:
        props = delivered.header.properties
        body = delivered.body
        if len(body) > self._max_bytes:
            too_large = PayloadTooLarge(f"{len(body)} bytes, over the limit of {self._max_bytes}")
            return await self._reject(delivered, queue, retry.OVERSIZE, too_large)
        reg = self.app.registry.get(props.message_type or "")
        if reg is None:
            not_found = TaskNotFound(
                f"no handler for task {props.message_type!r} on worker {self.identity}"
            )
            return await self._reject(delivered, queue, retry.UNKNOWN_TASK, not_found)
        if reg.task.queue != queue:
            misrouted = TaskNotFound(
                f"task {reg.task.name!r} belongs on queue {reg.task.queue!r}, but arrived on "
                f"{queue!r}: publish it with routing key {reg.task.queue!r}, or replay it with "
                f"`leveret dlq replay --queue {queue} --reason misrouted --to {reg.task.queue}`"
            )
            return await self._reject(delivered, queue, retry.MISROUTED, misrouted)
        headers = props.headers or {}
        attempt = message.attempt(headers)
        if attempt is None:
            bad_attempt = MalformedMessage(
                f"header {message.ATTEMPT} is {headers.get(message.ATTEMPT)!r}: it must be an "
                f"integer from 1 to {message.MAX_ATTEMPT} (or absent, meaning 1)"
            )
            return await self._reject(delivered, queue, retry.MALFORMED, bad_attempt)
        if props.content_encoding:
            try:
                body = message.decoded_body(body, props.content_encoding, self._max_bytes)
            except message.UnsupportedEncoding as exc:
                encoding = MalformedMessage(str(exc))
                return await self._reject(delivered, queue, retry.MALFORMED, encoding)
            if len(body) > self._max_bytes:
                too_large = PayloadTooLarge(
                    f"over {self._max_bytes} bytes once gunzipped, the limit of this worker"
                )
                return await self._reject(delivered, queue, retry.OVERSIZE, too_large)
        try:
            payload = reg.task.model.model_validate_json(body)
        except ValidationError as exc:
            malformed = any(e["type"] == "json_invalid" for e in exc.errors())
            reason = retry.MALFORMED if malformed else retry.INVALID_PAYLOAD
            return await self._reject(delivered, queue, reason, exc)

        ctx = TaskContext(
            task_id=props.message_id or "",
            name=reg.task.name,
            queue=queue,
            attempt=attempt,
            # A copy put back after a return is a redelivery too, for idempotency.
            redelivered=returns > 0 or bool(delivered.delivery.redelivered),  # type: ignore[union-attr]
            headers=headers,
            published_at_ms=message.header_opt_int(headers, message.PUBLISHED_AT),
            enqueued_at_ms=message.header_opt_int(headers, message.ENQUEUED_AT),
            delivery_count=returns or None,
        )
        middleware = self._middleware
        if middleware:
            ctx.state[BODY_SIZE] = len(body)
            for mw in middleware:
                mw.before_task(ctx)
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            await self._run(reg, payload, ctx)
            outcome = Outcome.SUCCEEDED
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc
            outcome = await self._fail(delivered, reg, ctx, exc)
        duration = time.perf_counter() - started
        self.counts[outcome.value] += 1
        for mw in middleware:
            mw.after_task(ctx, outcome, error, duration)
        if outcome is Outcome.ABANDONED:
            return Settle.REQUEUE
        return Settle.ACK

    async def _run(self, reg: Registration, payload: BaseModel, ctx: TaskContext) -> None:
        timeout = reg.timeout or self.settings.task_timeout
        if timeout < deadlines.EXACT_BELOW:
            scope = asyncio.timeout(timeout)
            try:
                async with scope:
                    await self._call(reg, payload, ctx)
            except TimeoutError:
                if scope.expired():
                    raise self._timed_out(reg, timeout) from None
                raise
            return
        task = self._deadlines.enter(timeout)
        try:
            if reg.is_async:
                await reg.call(payload, ctx)
            else:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._threads, reg.call, payload, ctx)
        except asyncio.CancelledError:
            if self._deadlines.leave(task):
                raise self._timed_out(reg, timeout) from None
            raise
        except BaseException:
            self._deadlines.leave(task)
            raise
        self._deadlines.leave(task)

    async def _call(self, reg: Registration, payload: BaseModel, ctx: TaskContext) -> None:
        if reg.is_async:
            await reg.call(payload, ctx)
        else:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._threads, reg.call, payload, ctx)

    def _timed_out(self, reg: Registration, timeout: float) -> TaskTimeout:
        return TaskTimeout(
            f"task {reg.task.name!r} ran past its timeout of {timeout:g} s"
            + ("" if reg.is_async else " (its thread was abandoned, not stopped)")
        )

    async def _fail(
        self, delivered: DeliveredMessage, reg: Registration, ctx: TaskContext, exc: Exception
    ) -> Outcome:
        decision = reg.retry.decide(exc, ctx.attempt)
        try:
            if isinstance(decision, float | int):
                await self._publish_retry(delivered, ctx, exc, float(decision))
                log.info(
                    "task %s %s attempt %d failed (%s); retrying in %.2f s",
                    ctx.name,
                    ctx.task_id,
                    ctx.attempt,
                    message.describe(exc),
                    decision,
                )
                return Outcome.RETRIED
            await self._publish_dead(delivered, ctx.queue, decision, exc)
        except PublishError as publish_error:
            log.error(
                "task %s %s failed and its %s could not be published (%s); the broker will "
                "redeliver it",
                ctx.name,
                ctx.task_id,
                "retry" if isinstance(decision, float | int) else "dead letter",
                publish_error,
            )
            return Outcome.ABANDONED
        log.warning(
            "task %s %s dead-lettered after attempt %d (%s): %s",
            ctx.name,
            ctx.task_id,
            ctx.attempt,
            decision,
            message.describe(exc),
        )
        return Outcome.DEAD_LETTERED if decision == retry.EXHAUSTED else Outcome.FAILED_PERMANENTLY

    async def _publish_retry(
        self, delivered: DeliveredMessage, ctx: TaskContext, exc: Exception, delay: float
    ) -> None:
        headers = message.copy_headers(ctx.headers)
        headers[message.ATTEMPT] = ctx.attempt + 1
        headers.pop(message.RETURNS, None)  # it ended: a retry starts uncounted
        headers[message.LAST_ERROR] = message.describe(exc)
        headers[message.PUBLISHED_AT] = message.now_ms()
        headers.setdefault(message.ENQUEUED_AT, headers[message.PUBLISHED_AT])
        exchange, key = await self._producer.route(ctx.queue, delay)
        props = republished(delivered.header.properties, headers)
        await self._producer.publisher.publish(exchange, key, delivered.body, props)

    async def _publish_dead(
        self, delivered: DeliveredMessage, queue: str, reason: str, exc: BaseException
    ) -> None:
        headers = message.copy_headers(delivered.header.properties.headers)
        headers.update(message.error_headers(exc, reason=reason, worker=self.identity, queue=queue))
        props = republished(delivered.header.properties, headers)
        await self._producer.publisher.publish(
            self._producer.names.dead_exchange, queue, delivered.body, props
        )

    async def _reject(
        self, delivered: DeliveredMessage, queue: str, reason: str, exc: BaseException
    ) -> Settle:
        """Dead-letter a message no task can run, then ack it; the worker goes on."""
        props = delivered.header.properties
        try:
            await self._publish_dead(delivered, queue, reason, exc)
        except PublishError as publish_error:
            log.error("could not dead-letter a bad message (%s); requeueing it", publish_error)
            return Settle.REQUEUE
        self.counts[Outcome.FAILED_PERMANENTLY.value] += 1
        log.warning(
            "dead-lettered message %s (type %r) from %s: %s: %s",
            props.message_id,
            props.message_type,
            queue,
            reason,
            message.describe(exc)[:300],
        )
        for mw in self._middleware:
            mw.on_rejected(queue, reason, exc)
        return Settle.ACK


def republished(props: Basic.Properties, headers: dict[str, Any]) -> Basic.Properties:
    """Properties for a copy we publish: the original's, with new headers.

    ``expiration`` is dropped (it would expire the copy in a delay or dead-letter
    queue), and so is ``user_id`` (the broker checks it against our own user) and a
    direct reply-to address (publishing to one that is gone closes the channel).
    Header values are encoded exactly: a double or a byte string stays what it was.
    """
    reply_to = props.reply_to
    if reply_to is not None and reply_to.startswith("amq.rabbitmq.reply-to"):
        reply_to = None
    return ExactProperties(
        content_type=props.content_type,
        content_encoding=props.content_encoding,
        headers=headers,
        delivery_mode=message.PERSISTENT,
        priority=props.priority,
        correlation_id=props.correlation_id,
        reply_to=reply_to,
        message_id=props.message_id,
        timestamp=props.timestamp,
        message_type=props.message_type,
        app_id=props.app_id,
    )
