"""Small helpers for tests that run real workers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import aio_pika

from broker import App, Worker


async def wait_for(
    predicate: Callable[[], bool],
    timeout: float = 20.0,
    every: float = 0.02,
) -> None:
    """Poll until ``predicate()`` holds; fail the test with a clear message if it never does."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """Run a worker in this event loop for the duration of the block, then drain it."""
    task = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: worker.ready or task.done())
        if task.done():
            task.result()
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, timeout=worker.shutdown_timeout + 10)


async def dead_letters(app: App, queue: str, count: int) -> list[aio_pika.IncomingMessage]:
    """Take ``count`` messages off a queue's dead-letter queue (waiting for them)."""
    connection = await app.connector.get()
    channel = await connection.channel()
    dlq = await channel.declare_queue(app.producer.names.dead_queue(queue), passive=True)
    found: list[aio_pika.IncomingMessage] = []
    async with dlq.iterator() as messages:
        async for msg in messages:
            found.append(msg)
            await msg.ack()
            if len(found) == count:
                break
    return found
