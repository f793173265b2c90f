"""Dead letters for tests: made as a worker writes them (to fill a dead-letter queue
fast, without running thousands of failing tasks), and taken back off a queue."""

from __future__ import annotations

import asyncio
import traceback
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import aio_pika
from pamqp.commands import Basic

from leveret import App, message
from leveret.deadletter.codec import ExactProperties
from tests.support.amqp import ids_in
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


async def check_nothing_lost(
    app: App, queue: str, wanted: set[str], kept: set[str]
) -> tuple[Counter[str], Counter[str]]:
    """After a replay of ``queue``'s dead letters was killed: every id it should replay
    is replayed or still dead, every other one still dead, nothing else replayed.
    Returns the ids in the work queue and in the dead-letter queue, with their counts."""
    names = app.sender.names
    for _ in range(50):  # the broker gives back the killed channel's messages
        work = Counter(await ids_in(app.settings.url, names.work_queue(queue)))
        dead = Counter(await ids_in(app.settings.url, names.dead_queue(queue)))
        if wanted <= set(work) | set(dead) and kept <= set(dead):
            assert not set(work) - wanted, "a message that did not match was replayed"
            return work, dead
        await asyncio.sleep(0.1)
    missing = (wanted - set(work) - set(dead)) | (kept - set(dead))
    raise AssertionError(f"{len(missing)} dead letters lost, e.g. {sorted(missing)[:3]}")
