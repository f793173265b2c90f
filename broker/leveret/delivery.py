"""The delivery pipeline: one delivery in, one settled outcome out.

Order of operations for each delivery (nothing is acknowledged before the step it
depends on is confirmed by the broker):

    success            handler returned                            -> ack
    retryable failure  retry copy (attempt+1) published, confirmed -> ack
    final failure      dead letter (with why) published, confirmed -> ack
    bad input          dead letter published, confirmed            -> ack
    outcome not confirmed (broker gone)                            -> requeue

A delivery that came back unsettled goes through the poison guard first
(``leveret.poison``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from pydantic import BaseModel, ValidationError

from leveret import message
from leveret.amqp import Delivery
from leveret.amqp.consume import Settle
from leveret.app import App
from leveret.errors import MalformedMessage, PayloadTooLarge, PublishError, TaskNotFound
from leveret.middleware import Emitter, Outcome
from leveret.outcomes import Outcomes
from leveret.poison import Isolation, PoisonGuard
from leveret.retry import DeadReason
from leveret.task import Registration, TaskContext
from leveret.time_limits import TimeLimits

log = logging.getLogger(__name__)

#: Key of ``TaskContext.state`` holding the body's size in bytes (set for middleware).
BODY_SIZE = "body_size"


class Rejected(Exception):
    """A delivery no task can run, with the dead-letter reason."""

    def __init__(self, reason: str, error: BaseException) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


class DeliveryPipeline:
    """Turns the deliveries of one worker's queues into settled outcomes."""

    def __init__(
        self,
        app: App,
        *,
        identity: str,
        queues: list[str],
        stopping: asyncio.Event,
        settle_acks: Callable[[], Awaitable[None]],
    ) -> None:
        self.app = app
        self.identity = identity
        self.counts: Counter[str] = Counter()
        self.emitter: Emitter = app.emitter
        self.outcomes = Outcomes(
            app.sender, identity=identity, emitter=self.emitter, counts=self.counts
        )
        self.time_limits = TimeLimits(app.settings.task_timeout)
        limits = {
            q: limit for q in queues if (limit := app.queue_spec(q).delivery_limit) is not None
        }
        self.poison = PoisonGuard(
            Isolation(stopping, settle_acks), self.outcomes, limits, self._process
        )
        self._stopping = stopping
        self._max_bytes = app.settings.max_payload_bytes

    async def process(self, delivered: Delivery, *, queue: str) -> Settle:
        """Validate, run and settle one delivery. Never raises for bad input."""
        if self._stopping.is_set():
            # Delivered after the stop, before the broker saw our cancel: give it back.
            return Settle.REQUEUE
        self.poison.gate.arrived()
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
            return await self.poison.returned_delivery(delivered, queue, returns, uncounted)
        return await self.poison.in_turn(delivered, queue, 0)

    async def _process(self, delivered: Delivery, queue: str, returns: int) -> Settle:
        try:
            reg, payload, attempt, size = self._accept(delivered, queue)
        except Rejected as rejected:
            return await self.outcomes.reject(delivered, queue, rejected.reason, rejected.error)
        headers = delivered.header.properties.headers or {}
        ctx = TaskContext(
            task_id=delivered.header.properties.message_id or "",
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
        emitter = self.emitter
        if emitter:
            ctx.state[BODY_SIZE] = size
            emitter.before_task(ctx)
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            await self.time_limits.run(reg, payload, ctx)
            outcome = Outcome.SUCCEEDED
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc
            outcome = await self._fail(delivered, reg, ctx, exc)
        duration = time.perf_counter() - started
        self.counts[outcome.value] += 1
        if emitter:
            emitter.after_task(ctx, outcome, error, duration)
        if outcome is Outcome.ABANDONED:
            return Settle.REQUEUE
        return Settle.ACK

    def _accept(self, delivered: Delivery, queue: str) -> tuple[Registration, BaseModel, int, int]:
        """The task, payload, attempt and body size of a delivery a task can run."""
        props = delivered.header.properties
        body = delivered.body
        limit = self._max_bytes
        if len(body) > limit:
            raise Rejected(
                DeadReason.OVERSIZE,
                PayloadTooLarge(f"{len(body)} bytes, over the limit of {limit}"),
            )
        reg = self.app.registry.get(props.message_type or "")
        if reg is None:
            raise Rejected(
                DeadReason.UNKNOWN_TASK,
                TaskNotFound(
                    f"no handler for task {props.message_type!r} on worker {self.identity}"
                ),
            )
        if reg.task.queue != queue:
            right = reg.task.queue
            raise Rejected(
                DeadReason.MISROUTED,
                TaskNotFound(
                    f"task {reg.task.name!r} belongs on queue {right!r}, but arrived on "
                    f"{queue!r}: publish it with routing key {right!r}, or replay it with "
                    f"`leveret dlq replay --queue {queue} --reason misrouted --to {right}`"
                ),
            )
        headers = props.headers
        attempt = message.attempt(headers)
        if attempt is None:
            given = (headers or {}).get(message.ATTEMPT)
            raise Rejected(
                DeadReason.MALFORMED,
                MalformedMessage(
                    f"header {message.ATTEMPT} is {given!r}: it must be an integer from 1 "
                    f"to {message.MAX_ATTEMPT} (or absent, meaning 1)"
                ),
            )
        if props.content_encoding:
            try:
                body = message.decoded_body(body, props.content_encoding, limit)
            except message.UnsupportedEncoding as exc:
                raise Rejected(DeadReason.MALFORMED, MalformedMessage(str(exc))) from None
            if len(body) > limit:
                raise Rejected(
                    DeadReason.OVERSIZE,
                    PayloadTooLarge(f"over {limit} bytes once gunzipped, the limit of this worker"),
                )
        try:
            payload = reg.task.model.model_validate_json(body)
        except ValidationError as exc:
            malformed = any(e["type"] == "json_invalid" for e in exc.errors())
            raise Rejected(
                DeadReason.MALFORMED if malformed else DeadReason.INVALID_PAYLOAD, exc
            ) from None
        return reg, payload, attempt, len(body)

    async def _fail(
        self, delivered: Delivery, reg: Registration, ctx: TaskContext, exc: Exception
    ) -> Outcome:
        decision = reg.retry.decide(exc, ctx.attempt)
        retrying = isinstance(decision, float | int)
        try:
            if isinstance(decision, float | int):
                delay = await self.outcomes.retry(delivered, ctx, exc, float(decision))
                log.info(
                    "task %s %s attempt %d failed (%s); retrying in %.2f s",
                    ctx.name,
                    ctx.task_id,
                    ctx.attempt,
                    message.describe(exc),
                    delay,
                )
                return Outcome.RETRIED
            await self.outcomes.dead(delivered, ctx.queue, decision, exc)
        except PublishError as publish_error:
            log.error(
                "task %s %s failed and its %s could not be published (%s); the broker will "
                "redeliver it",
                ctx.name,
                ctx.task_id,
                "retry" if retrying else "dead letter",
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
        return (
            Outcome.DEAD_LETTERED
            if decision == DeadReason.EXHAUSTED
            else Outcome.FAILED_PERMANENTLY
        )
