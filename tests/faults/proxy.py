"""A fault-injecting TCP proxy between AMQP clients and a RabbitMQ node.

It runs on its own event loop in a thread, so a test that blocks (a ``rabbitmqctl``
call, a ``time.sleep``) does not stall the traffic it is carrying. Faults, on command:

- ``reset_all()``     every open connection is cut with a TCP RST on both sides;
- ``blackhole()``     nothing is forwarded and nothing is closed: bytes are held, as
                      TCP would keep retransmitting them, and delivered (or the peer
                      reset) when the network comes back;
- ``refuse()``        the port stops listening: new connections are refused;
- ``redirect(...)``   new connections go to another upstream;
- ``stick_nacks()``   the next channel to publish gets every publisher confirm
                      turned into a nack until the client closes that channel (what a
                      channel did for minutes after a quorum leader failover).

It reads the AMQP frames as they pass and keeps a log of the interesting ones
(connection and channel open/close, basic.consume, confirms it rewrote), so a test
can tell when a client noticed a fault and when it was back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

T = TypeVar("T")

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD, FRAME_END = 1, 0xCE

# (class id, method id) of the frames worth remembering.
CONNECTION_CLOSE = (10, 50)
CHANNEL_OPEN, CHANNEL_CLOSE, CHANNEL_CLOSE_OK = (20, 10), (20, 40), (20, 41)
BASIC_CONSUME, BASIC_CONSUME_OK, BASIC_CANCEL = (60, 20), (60, 21), (60, 30)
BASIC_PUBLISH, BASIC_ACK, BASIC_NACK = (60, 40), (60, 80), (60, 120)
TAPPED = {
    CONNECTION_CLOSE,
    CHANNEL_OPEN,
    CHANNEL_CLOSE,
    BASIC_CONSUME,
    BASIC_CONSUME_OK,
    BASIC_CANCEL,
}

Direction = Literal["up", "down"]  # up: client -> broker; down: broker -> client


@dataclass(frozen=True)
class Upstream:
    """Where the proxy connects: a TCP address, or a unix socket (a node in a netns)."""

    host: str = "127.0.0.1"
    port: int = 0
    unix: str | None = None

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.unix is not None:
            return await asyncio.open_unix_connection(self.unix)
        return await asyncio.open_connection(self.host, self.port)


@dataclass(frozen=True)
class Event:
    """Something the proxy saw or did, with the wall-clock time it happened."""

    at: float
    link: int
    what: str  # "open", "eof" (that side closed), "closed", "frame", "nacked", "reset"
    direction: Direction | None = None
    channel: int = 0
    method: tuple[int, int] | None = None


@dataclass(eq=False)
class _Link:
    id: int
    client_reader: asyncio.StreamReader
    client_writer: asyncio.StreamWriter
    upstream_reader: asyncio.StreamReader | None = None
    upstream_writer: asyncio.StreamWriter | None = None
    buffers: dict[str, bytearray] = field(
        default_factory=lambda: {"up": bytearray(), "down": bytearray()}
    )
    held: dict[str, bytearray] = field(
        default_factory=lambda: {"up": bytearray(), "down": bytearray()}
    )
    eof: dict[str, bool] = field(default_factory=lambda: {"up": False, "down": False})
    header_seen: bool = False
    stuck: set[int] = field(default_factory=set)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closed: bool = False


class FaultProxy:
    """One listening port in front of one upstream node; see the module docstring."""

    def __init__(self, upstream: Upstream, *, name: str = "proxy") -> None:
        self.upstream = upstream
        self.name = name
        self.port = 0
        self.events: list[Event] = []
        self.nacked = 0
        self._links: dict[int, _Link] = {}
        self._ids = itertools.count(1)
        self._blackholed = False
        self._stick_next = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._server: asyncio.Server | None = None
        self._lock = threading.Lock()

    # -- lifecycle (called from the test's thread) -----------------------------------

    def start(self, port: int = 0) -> FaultProxy:
        self._thread.start()
        self._call(self._listen(port))
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def url(self, user: str = "guest", password: str = "guest", vhost: str = "") -> str:
        return f"amqp://{user}:{password}@127.0.0.1:{self.port}/{vhost}"

    # -- faults ---------------------------------------------------------------------

    def reset_all(self) -> int:
        """Cut every open connection with a TCP RST, both sides; returns how many."""
        return self._call(self._reset_all())

    def blackhole(self, on: bool = True) -> None:
        """Stop (or resume) forwarding without closing anything."""
        self._call(self._set_blackhole(on))

    def refuse(self, on: bool = True) -> None:
        """Stop (or resume) listening: clients get connection refused."""
        self._call(self._refuse(on))

    def redirect(self, upstream: Upstream) -> None:
        """Send new connections to another upstream; open ones stay where they are."""
        self.upstream = upstream

    def clear(self) -> None:
        """No more faults: forward, listen, and rewrite nothing from now on."""
        self.blackhole(False)
        self.refuse(False)
        with self._lock:
            self._stick_next = 0

    def stick_nacks(self, channels: int = 1) -> None:
        """Make the next ``channels`` channels to publish (open ones included) nack
        every confirm from now until the client closes them."""
        with self._lock:
            self._stick_next += channels

    @property
    def open_links(self) -> int:
        return sum(1 for link in list(self._links.values()) if not link.closed)

    def seen(
        self,
        method: tuple[int, int] | None = None,
        *,
        what: str = "frame",
        since: float = 0.0,
        direction: Direction | None = None,
    ) -> list[Event]:
        """Logged events of one kind after ``since`` (wall clock)."""
        with self._lock:
            events = list(self.events)
        return [
            e
            for e in events
            if e.what == what
            and e.at >= since
            and (method is None or e.method == method)
            and (direction is None or e.direction == direction)
        ]

    def links_open_at(self, moment: float) -> set[int]:
        """Links that were open at wall-clock time ``moment``."""
        with self._lock:
            events = list(self.events)
        opened = {e.link for e in events if e.what == "open" and e.at <= moment}
        closed = {e.link for e in events if e.what == "closed" and e.at <= moment}
        return opened - closed

    async def wait_consumers(self, count: int, since: float, within: float = 30) -> list[float]:
        """Times (sorted) of the first basic.consume on each link after ``since``, once
        ``count`` links have sent one (or ``within`` seconds have passed)."""
        deadline = time.monotonic() + within
        while len(self.consuming_links(since)) < count and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return sorted(self.consuming_links(since).values())

    def consuming_links(self, since: float) -> dict[int, float]:
        """Links that sent basic.consume after ``since``: link -> first such time."""
        first: dict[int, float] = {}
        for e in self.seen(BASIC_CONSUME, since=since, direction="up"):
            first.setdefault(e.link, e.at)
        return first

    # -- inside the proxy's loop ----------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def _log(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    async def _listen(self, port: int) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", port or self.port or 0, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _refuse(self, on: bool) -> None:
        if on and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        elif not on and self._server is None:
            await self._listen(self.port)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset_all()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(next(self._ids), reader, writer)
        self._links[link.id] = link
        self._log(Event(time.time(), link.id, "open"))
        me = asyncio.current_task()
        assert me is not None
        link.tasks += [me, asyncio.create_task(self._pump(link, "up"))]
        try:
            # In a black hole the connection does not reach the broker until it ends
            # (like a SYN retransmitted until the route is back); what the client
            # sends meanwhile is held.
            while self._blackholed and not link.closed:  # noqa: ASYNC110 - set by another thread's call
                await asyncio.sleep(0.05)
            if link.closed:
                return
            try:
                upstream = await self.upstream.open()
            except OSError:
                self._abort(link)
                return
            link.upstream_reader, link.upstream_writer = upstream
            if link.closed:
                upstream[1].close()
                return
            self._flush(link, "up")
            await self._pump(link, "down")
        finally:
            if link.closed:
                self._links.pop(link.id, None)

    async def _pump(self, link: _Link, direction: Direction) -> None:
        reader = link.client_reader if direction == "up" else link.upstream_reader
        assert reader is not None
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                self._carry(link, direction, data)
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return
        link.eof[direction] = True
        self._log(Event(time.time(), link.id, "eof", direction))
        if not self._blackholed:
            self._close(link)

    def _carry(self, link: _Link, direction: Direction, data: bytes) -> None:
        if self._blackholed or (direction == "up" and link.upstream_writer is None):
            link.held[direction] += data
            return
        self._forward(link, direction, data)

    def _flush(self, link: _Link, direction: Direction) -> None:
        held = bytes(link.held[direction])
        link.held[direction].clear()
        if held:
            self._forward(link, direction, held)

    def _forward(self, link: _Link, direction: Direction, data: bytes) -> None:
        writer = link.upstream_writer if direction == "up" else link.client_writer
        if writer is None or writer.is_closing():
            return
        out = self._frames(link, direction, data)
        if out:
            writer.write(out)

    def _frames(self, link: _Link, direction: Direction, data: bytes) -> bytes:
        """Pass whole frames on (rewriting confirms on stuck channels), keep the rest."""
        buf = link.buffers[direction]
        buf += data
        out = bytearray()
        if direction == "up" and not link.header_seen:
            if len(buf) < len(PROTOCOL_HEADER):
                return b""
            out += buf[: len(PROTOCOL_HEADER)]
            del buf[: len(PROTOCOL_HEADER)]
            link.header_seen = True
        while len(buf) >= 7:
            kind, channel, size = struct.unpack_from(">BHI", buf, 0)
            end = 7 + size + 1
            if len(buf) < end:
                break
            frame = bytearray(buf[:end])
            del buf[:end]
            if kind == FRAME_METHOD and size >= 4:
                method = struct.unpack_from(">HH", frame, 7)
                self._on_method(link, direction, channel, method, frame)
            out += frame
        return bytes(out)

    def _on_method(
        self,
        link: _Link,
        direction: Direction,
        channel: int,
        method: tuple[int, int],
        frame: bytearray,
    ) -> None:
        if method in TAPPED:
            self._log(Event(time.time(), link.id, "frame", direction, channel, method))
        if direction == "up":
            if method == BASIC_PUBLISH and channel not in link.stuck:
                with self._lock:
                    if self._stick_next > 0:
                        self._stick_next -= 1
                        link.stuck.add(channel)
            elif method in (CHANNEL_CLOSE, CHANNEL_CLOSE_OK):
                link.stuck.discard(channel)
        elif method == BASIC_ACK and channel in link.stuck:
            struct.pack_into(">H", frame, 9, BASIC_NACK[1])
            self.nacked += 1
            self._log(Event(time.time(), link.id, "nacked", direction, channel, BASIC_NACK))
        elif method in (CHANNEL_CLOSE, CHANNEL_CLOSE_OK):
            link.stuck.discard(channel)

    async def _set_blackhole(self, on: bool) -> None:
        self._blackholed = on
        if on:
            return
        for link in list(self._links.values()):
            if link.closed:
                continue
            if link.eof["up"] or link.eof["down"]:
                # One side gave up while the network was gone: the first packet the
                # other side sends now is answered with a reset.
                self._abort(link)
                continue
            if link.upstream_writer is not None:
                self._flush(link, "up")
                self._flush(link, "down")

    async def _reset_all(self) -> int:
        links = [link for link in self._links.values() if not link.closed]
        for link in links:
            self._log(Event(time.time(), link.id, "reset"))
            self._abort(link)
        await asyncio.sleep(0)
        return len(links)

    def _close(self, link: _Link) -> None:
        if link.closed:
            return
        link.closed = True
        self._log(Event(time.time(), link.id, "closed"))
        for writer in (link.client_writer, link.upstream_writer):
            if writer is not None and not writer.is_closing():
                with contextlib.suppress(OSError, RuntimeError):
                    writer.close()
        self._cancel_pumps(link)

    def _abort(self, link: _Link) -> None:
        """Close both sides with RST (SO_LINGER 0), not a polite FIN."""
        if link.closed:
            return
        link.closed = True
        self._log(Event(time.time(), link.id, "closed"))
        for writer in (link.client_writer, link.upstream_writer):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self._cancel_pumps(link)

    def _cancel_pumps(self, link: _Link) -> None:
        current = asyncio.current_task()
        for task in link.tasks:
            if task is not current and not task.done():
                task.cancel()


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], within: float, every: float = 0.05
) -> float:
    """Seconds until ``predicate()`` held; raises AssertionError after ``within`` s."""
    start = time.monotonic()
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > within:
            raise AssertionError(f"condition not met within {within:.0f} s")
        await asyncio.sleep(every)
