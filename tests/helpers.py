"""Small helpers for tests that run real workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import aio_pika

from leveret import App, Worker


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
    dlq = await channel.declare_queue(app.sender.names.dead_queue(queue), passive=True)
    found: list[aio_pika.IncomingMessage] = []
    async with dlq.iterator() as messages:
        async for msg in messages:
            found.append(msg)
            await msg.ack()
            if len(found) == count:
                break
    return found


class Output:
    """Reads a process's output on a thread, so its pipe never fills and blocks it.

    One reader per process: ``Output(proc)`` returns the reader already attached.
    """

    _readers: ClassVar[weakref.WeakKeyDictionary[subprocess.Popen[bytes], Output]] = (
        weakref.WeakKeyDictionary()
    )

    def __new__(cls, proc: subprocess.Popen[bytes]) -> Output:
        reader = cls._readers.get(proc)
        if reader is None:
            reader = super().__new__(cls)
            cls._readers[proc] = reader
        return reader

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        if hasattr(self, "_thread"):
            return
        assert proc.stdout is not None
        self.lines: list[str] = []
        self._stream = proc.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in self._stream:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def join(self, seconds: float = 5.0) -> None:
        self._thread.join(seconds)

    def records(self) -> list[dict[str, Any]]:
        """The lines that are JSON log records."""
        found = []
        for line in self.lines:
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    found.append(json.loads(line))
        return found

    @property
    def text(self) -> str:
        return "\n".join(self.lines)
