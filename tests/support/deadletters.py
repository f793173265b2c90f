"""Dead letters for tests: made as a worker writes them (to fill a dead-letter queue
fast, without running thousands of failing tasks), and taken back off a queue."""

from __future__ import annotations

import asyncio
import traceback
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
from pamqp.commands import Basic

from leveret import App, message
from leveret.deadletter.codec import ExactProperties
from tests.support.waiting import PATIENCE


def dead_letter(
    *,
    task: str = "demo.task",
    task_id: str | None = None,
    queue: str = "work",
    error: BaseException | None = None,
    reason: str = "exhausted",
    attempt: int = 3,
    failed_at_ms: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Basic.Properties:
    """Properties of a dead letter as a worker writes it."""
    exc = error or ValueError("boom")
    try:
        raise exc
    except BaseException as raised:
        headers = message.error_headers(raised, reason=reason, worker="test:1", queue=queue)
    headers[message.ATTEMPT] = attempt
    headers[message.ENQUEUED_AT] = message.now_ms()
    if failed_at_ms is not None:
        headers[message.FAILED_AT] = failed_at_ms
    headers.update(extra or {})
    return ExactProperties(
        content_type=message.CONTENT_TYPE,
        delivery_mode=message.PERSISTENT,
        priority=0,
        message_id=task_id or uuid.uuid4().hex,
        message_type=task,
        timestamp=datetime.now(tz=UTC),
        headers=headers,
    )


def fast_traceback(size: int = 600) -> str:
    """A traceback-sized string without raising anything."""
    text = "".join(traceback.format_stack(limit=4))
    return (text * (size // max(len(text), 1) + 1))[:size]


async def dead_letters(
    app: App, queue: str, count: int, timeout: float = PATIENCE
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take ``count`` messages off a queue's dead-letter queue, waiting for them."""
    connection = await app.connector.get()
    channel = await connection.channel()
    dlq = await channel.declare_queue(app.sender.names.dead_queue(queue), passive=True)
    found: list[aio_pika.abc.AbstractIncomingMessage] = []
    try:
        async with asyncio.timeout(timeout), dlq.iterator() as messages:
            async for msg in messages:
                found.append(msg)
                await msg.ack()
                if len(found) == count:
                    break
    except TimeoutError:
        raise AssertionError(
            f"{len(found)} of {count} dead letters of {queue} within {timeout:g} s"
        ) from None
    return found
