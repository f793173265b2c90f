"""Helpers for the dead-letter tests: fill a queue fast, read one back, run the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import traceback
import uuid
from collections.abc import Iterable
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

import aiormq
from pamqp.commands import Basic

from leveret import message
from leveret.amqp.browse import browse
from leveret.deadletter.codec import ExactProperties
from tests.conftest import ROOT


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


async def fill(
    url: str,
    queue: str,
    messages: Iterable[tuple[bytes, Basic.Properties]],
    *,
    window: int = 2000,
) -> int:
    """Publish straight into ``queue`` (an AMQP name), confirmed, many in flight."""
    connection = await aiormq.connect(url)
    count = 0
    try:
        channel = await connection.channel(publisher_confirms=True)
        pending: list[Any] = []
        for body, props in messages:
            pending.append(channel.basic_publish(body, routing_key=queue, properties=props))
            if len(pending) >= window:
                await asyncio.gather(*pending)
                count += len(pending)
                pending.clear()
        await asyncio.gather(*pending)
        count += len(pending)
    finally:
        await connection.close()
    return count


def fast_traceback(size: int = 600) -> str:
    """A traceback-sized string without raising anything."""
    text = "".join(traceback.format_stack(limit=4))
    return (text * (size // max(len(text), 1) + 1))[:size]


async def queue_size(url: str, queue: str) -> int:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        ok = await channel.queue_declare(queue, passive=True)
        return int(ok.message_count or 0)
    finally:
        await connection.close()


async def peek(url: str, queue: str) -> list[aiormq.abc.DeliveredMessage]:
    """Every message of a queue (an AMQP name), leaving them all in it."""
    import aio_pika

    connection = await aio_pika.connect(url)
    try:
        async with aclosing(browse(connection, queue)) as deliveries:
            return [d async for d in deliveries]
    finally:
        await connection.close()


async def ids_in(url: str, queue: str) -> list[str]:
    return [str(d.header.properties.message_id) for d in await peek(url, queue)]


def cli(
    url: str,
    namespace: str,
    *args: str,
    stdin: str | None = None,
    timeout: float = 90,
) -> subprocess.CompletedProcess[str]:
    """Run ``leveret <args>`` in a subprocess against the test's namespace."""
    env = {
        **os.environ,
        "LEVERET_URL": url,
        "LEVERET_NAMESPACE": namespace,
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "leveret", *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def popen_cli(url: str, namespace: str, *args: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LEVERET_URL": url,
        "LEVERET_NAMESPACE": namespace,
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "leveret", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
