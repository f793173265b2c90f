"""Publishing what became of a delivery: a retry copy, a dead letter, or a copy put back.

Each is a new message that RabbitMQ must confirm before the original is acked; if it
cannot be published, ``PublishError`` reaches the caller, which then requeues the
original rather than lose it.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any

from leveret import message
from leveret.amqp import Delivery, Properties
from leveret.amqp.consume import Settle
from leveret.amqp.table import ExactProperties
from leveret.errors import PublishError
from leveret.middleware import RETRY_HEADERS, Emitter, Outcome
from leveret.sending import TaskSender
from leveret.task import TaskContext

log = logging.getLogger(__name__)


class Outcomes:
    """The publishing side of one worker's deliveries."""

    def __init__(
        self, sender: TaskSender, *, identity: str, emitter: Emitter, counts: Counter[str]
    ) -> None:
        self._sender = sender
        self._publisher = sender.publisher
        self._names = sender.names
        self._identity = identity
        self._emitter = emitter
        self._counts = counts
        self._max_delay = sender.settings.max_delay_seconds

    async def retry(
        self, delivered: Delivery, ctx: TaskContext, exc: Exception, delay: float
    ) -> float:
        """Publish the next attempt after ``delay`` seconds; returns the delay used.

        A delay past what the delay ladder holds (about 497 days by default) is
        clamped to the longest it holds, with a warning: failing here would requeue
        the delivery and run it again at once.
        """
        if not delay <= self._max_delay:  # NaN too
            log.warning(
                "task %s %s asked to be retried in %s s, over the longest delay the delay "
                "levels hold; retrying in %.0f s instead",
                ctx.name,
                ctx.task_id,
                delay,
                self._max_delay,
            )
            delay = self._max_delay if not math.isnan(delay) else 0.0
        headers = message.copy_headers(ctx.headers)
        headers[message.ATTEMPT] = ctx.attempt + 1
        headers.pop(message.RETURNS, None)  # it ended: a retry starts uncounted
        headers[message.LAST_ERROR] = message.describe(exc)
        headers[message.PUBLISHED_AT] = message.now_ms()
        headers.setdefault(message.ENQUEUED_AT, headers[message.PUBLISHED_AT])
        added = ctx.state.get(RETRY_HEADERS)
        if added:
            headers.update(added)
        exchange, key = await self._sender.route(
            ctx.queue, delay, delivered.header.properties.priority or 0
        )
        props = republished(delivered.header.properties, headers)
        await self._publisher.publish(exchange, key, delivered.body, props)
        return delay

    async def dead(self, delivered: Delivery, queue: str, reason: str, exc: BaseException) -> None:
        """Publish a dead letter that records why the task died."""
        headers = message.copy_headers(delivered.header.properties.headers)
        headers.update(
            message.error_headers(exc, reason=reason, worker=self._identity, queue=queue)
        )
        props = republished(delivered.header.properties, headers)
        await self._publisher.publish(self._names.dead_exchange, queue, delivered.body, props)

    async def reject(
        self, delivered: Delivery, queue: str, reason: str, exc: BaseException
    ) -> Settle:
        """Dead-letter a message no task can run, then ack it; the worker goes on."""
        props = delivered.header.properties
        try:
            await self.dead(delivered, queue, reason, exc)
        except PublishError as publish_error:
            log.error("could not dead-letter a bad message (%s); requeueing it", publish_error)
            return Settle.REQUEUE
        self._counts[Outcome.FAILED_PERMANENTLY.value] += 1
        log.warning(
            "dead-lettered message %s (type %r) from %s: %s: %s",
            props.message_id,
            props.message_type,
            queue,
            reason,
            message.describe(exc)[:300],
        )
        if self._emitter:
            self._emitter.on_rejected(queue, reason, exc)
        return Settle.ACK

    async def put_back(self, delivered: Delivery, queue: str, returns: int, after: float) -> None:
        """Publish a copy that carries the return count, to arrive after ``after`` s."""
        props = delivered.header.properties
        headers = message.copy_headers(props.headers)
        headers[message.RETURNS] = returns
        headers[message.PUBLISHED_AT] = message.now_ms()
        exchange, key = await self._sender.route(queue, after, props.priority or 0)
        await self._publisher.publish(exchange, key, delivered.body, republished(props, headers))


def republished(props: Properties, headers: dict[str, Any]) -> Properties:
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
