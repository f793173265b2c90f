"""A stand-in for Sentry (or a Relay beside the worker) that accepts every envelope.

The bench's Sentry must answer as the real one does: a port that refuses connections
makes the SDK retry each envelope three times and log the failure, a cost no
production worker pays. The sink runs on the harness's loop, in its own process, and
counts what it was sent, so a row can say how many transactions were traced.
"""

from __future__ import annotations

import asyncio
import contextlib

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class SentrySink:
    """HTTP/1.1 with keep-alive: read a request with its body, answer 200, repeat."""

    def __init__(self) -> None:
        self.envelopes = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def dsn(self) -> str:
        return f"http://bench@127.0.0.1:{self.port}/1"

    async def start(self) -> SentrySink:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.envelopes += 1
                writer.write(OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
