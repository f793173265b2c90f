"""Health endpoints on the worker's own event loop: ``/livez``, ``/readyz``, ``/metrics``.

The server runs on the same loop as the tasks, so a loop blocked by a handler cannot
answer and the liveness probe fails, which is the point: the kubelet restarts a
worker that no longer runs anything. Liveness never depends on the broker (a broker
restart must not restart every worker); readiness does.

A minimal HTTP/1.1 server on ``asyncio.start_server``: GET and HEAD, one request per
connection, no framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from leveret.ops.metrics import Metrics
    from leveret.worker import Worker

log = logging.getLogger(__name__)

#: status, content type, body
Response = tuple[int, str, bytes]
Route = Callable[[], Awaitable[Response]]

TEXT = "text/plain; charset=utf-8"
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
MAX_HEAD = 8192
READ_TIMEOUT = 5.0


async def start_or_warn(health: HealthServer | None) -> HealthServer | None:
    """Start ``health``; a port already taken turns the endpoints off with a warning
    instead of stopping the process: the work matters more than its probes."""
    if health is None:
        return None
    try:
        await health.start()
    except OSError as exc:
        log.warning(
            "health endpoints disabled: cannot listen on port %d (%s); give each process "
            "on this host its own --health-port, or 0 to turn them off",
            health.port,
            exc.strerror or exc,
        )
        return None
    log.info("health endpoints on port %d: /livez /readyz /metrics", health.port)
    return health


class HealthServer:
    """Serves a few GET routes; everything else is a 404."""

    def __init__(
        self,
        routes: dict[str, Route],
        *,
        host: str = "0.0.0.0",
        port: int = 8000,
        sock: socket.socket | None = None,
    ) -> None:
        self.routes = routes
        self.host = host
        self.port = port
        self._sock = sock
        self._server: asyncio.Server | None = None

    async def start(self) -> HealthServer:
        """Listen; raises OSError if the port is taken."""
        if self._sock is not None:
            self._server = await asyncio.start_server(self._handle, sock=self._sock)
        else:
            self._server = await asyncio.start_server(
                self._handle, self.host, self.port, reuse_address=True
            )
        listening = [s for s in self._server.sockets if s is not None]
        if not listening:
            # uvloop reports a lost bind race (two processes binding one port with
            # SO_REUSEADDR, the other listening first) as a server without a socket
            # instead of raising as asyncio does.
            self._server.close()
            self._server = None
            raise OSError(errno.EADDRINUSE, "address already in use")
        self.port = listening[0].getsockname()[1]
        return self

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            if len(head) > MAX_HEAD:
                return
            method, _, rest = head.decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            if method not in ("GET", "HEAD"):
                status, ctype, body = 405, TEXT, b"only GET and HEAD\n"
            else:
                route = self.routes.get(path)
                if route is None:
                    status, ctype, body = 404, TEXT, b"not found\n"
                else:
                    try:
                        status, ctype, body = await route()
                    except Exception as exc:
                        log.exception("health route %s failed", path)
                        status, ctype, body = 503, TEXT, f"error: {exc}\n".encode()
            writer.write(
                f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n".encode()
            )
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def worker_routes(worker: Worker, metrics: Metrics | None = None) -> dict[str, Route]:
    """``/livez``, ``/readyz`` and (with metrics) ``/metrics`` of one worker."""

    async def livez() -> Response:
        return 200, TEXT, b"ok\n"

    async def readyz() -> Response:
        if worker.ready:
            return 200, TEXT, b"ready\n"
        return 503, TEXT, f"not ready: {unready_reason(worker)}\n".encode()

    routes: dict[str, Route] = {"/livez": livez, "/readyz": readyz}
    if metrics is not None:

        async def render() -> Response:
            from leveret.ops.metrics import CONTENT_TYPE

            return 200, CONTENT_TYPE, metrics.render()

        routes["/metrics"] = render
    return routes


def unready_reason(worker: Worker) -> str:
    """Why a worker is not ready, for the probe's body and the operator reading it."""
    if worker.app.connector.connection is None:
        return "not connected to RabbitMQ (reconnecting)"
    missing = [q for q in worker.queues if not (c := worker.consumers.get(q)) or not c.subscribed]
    if missing:
        return f"not consuming from {', '.join(missing)} (re-subscribing)"
    return "starting or stopping"


async def probe(host: str, port: int, path: str, within: float = 2.0) -> tuple[int, bytes]:
    """GET ``path``; the status and body. Raises OSError or TimeoutError if no answer."""
    async with asyncio.timeout(within):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            data = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise OSError(f"not an HTTP answer from {host}:{port}")
    return int(parts[1]), body
