"""An event loop in a background thread that owns one resource, for callers without a loop.

Sync code (a WSGI server's threads, a Django view, a script) reaches asyncio objects
through it: every call runs as a coroutine on the one loop that owns the resource (a
connection and its publisher), so many threads share one connection safely.

It starts on first use. After ``fork`` the child starts afresh: a thread does not
survive a fork, and the parent's connection is not the child's to use or to close (a
close would speak on the parent's socket), so the parent's loop and resource are left
untouched, kept referenced in the child and never closed there. At interpreter exit
each started loop closes its resource and stops.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from leveret.errors import ConfigError, NotConfirmed

log = logging.getLogger(__name__)

S = TypeVar("S")
T = TypeVar("T")

#: How long closing a resource may take at interpreter exit before the loop is dropped.
EXIT_GRACE = 10.0

_started: weakref.WeakSet[LoopThread[Any]] = weakref.WeakSet()
#: A parent's loops and resources, in a forked child: referenced so they are never
#: garbage-collected (and so never closed) there.
_inherited: list[object] = []


class LoopThread(Generic[S]):
    """Runs coroutines against a resource made by ``open`` on a loop in its own thread."""

    def __init__(
        self,
        name: str,
        open: Callable[[], S],
        close: Callable[[S], Awaitable[None]],
    ) -> None:
        self.name = name
        self._open = open
        self._close = close
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._resource: S | None = None
        #: Calls under way, so that a close can end each one, never leave it hanging.
        self._calls: set[concurrent.futures.Future[Any]] = set()

    @property
    def started(self) -> bool:
        return self._loop is not None

    def call(self, work: Callable[[S], Coroutine[Any, Any, T]]) -> T:
        """Run ``work(resource)`` on the loop and block until it returns or raises."""
        loop, resource = self._ensure()
        if self._thread is threading.current_thread():
            raise ConfigError(
                f"{self.name}: a blocking send was called from its own event-loop thread, "
                "where it would wait for itself; use the App's async send there"
            )
        # The task runs in a copy of this thread's context (call_soon_threadsafe copies
        # it here): a request's trace is what the send continues.
        future = asyncio.run_coroutine_threadsafe(work(resource), loop)
        self._calls.add(future)
        future.add_done_callback(self._calls.discard)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise NotConfirmed(
                f"{self.name} was closed while this call was still running: it may or may "
                "not have been sent; close only after the last send has returned"
            ) from None
        except BaseException:
            future.cancel()  # interrupted (KeyboardInterrupt): do not leave the send running
            raise

    def close(self, timeout: float | None = None) -> None:
        """Close the resource on the loop, then stop the loop and its thread.

        A later ``call`` starts a new loop. Safe to call when never started.
        """
        with self._lock:
            loop, thread, resource = self._loop, self._thread, self._resource
            self._loop = self._thread = self._resource = None
        if loop is None or thread is None:
            return
        # Sends under way finish first: each is bounded by its own deadline.
        concurrent.futures.wait(list(self._calls), timeout)
        closing = asyncio.run_coroutine_threadsafe(_closing(self._close, resource), loop)
        try:
            closing.result(timeout)
        except concurrent.futures.TimeoutError:
            log.warning("%s: closing took over %.0f s; dropping it", self.name, timeout or 0)
        except Exception:
            log.warning("%s: closing failed", self.name, exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        for call in list(self._calls):
            call.cancel()  # its caller gets NotConfirmed, not a hang
        if not thread.is_alive():
            loop.run_until_complete(asyncio.sleep(0))  # the cancellations reach their tasks
            loop.close()
        _started.discard(self)

    def _ensure(self) -> tuple[asyncio.AbstractEventLoop, S]:
        loop, resource = self._loop, self._resource
        if loop is not None and resource is not None:
            return loop, resource
        with self._lock:
            loop, resource = self._loop, self._resource
            if loop is None or resource is None:
                loop, resource = self._start()
            return loop, resource

    def _start(self) -> tuple[asyncio.AbstractEventLoop, S]:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_run_forever, args=(loop,), name=self.name, daemon=True)
        thread.start()
        # Made on the loop, so that whatever binds to a running loop binds to this one.
        made = asyncio.run_coroutine_threadsafe(_made(self._open), loop)
        try:
            resource = made.result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            raise
        self._loop, self._thread, self._resource = loop, thread, resource
        _started.add(self)
        return loop, resource

    def _forget(self) -> None:
        """In a forked child: leave the parent's loop alone and start afresh on next use."""
        if self._loop is not None:
            _inherited.append((self._loop, self._thread, self._resource))
        self._lock = threading.Lock()  # the parent may have held it while forking
        self._loop = self._thread = self._resource = None


def _run_forever(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


async def _made(open: Callable[[], S]) -> S:
    return open()


async def _closing(close: Callable[[S], Awaitable[None]], resource: S | None) -> None:
    if resource is not None:
        await close(resource)


def _after_fork_in_child() -> None:
    for owner in list(_started):
        owner._forget()
    _started.clear()


def _close_all_at_exit() -> None:
    for owner in list(_started):
        owner.close(timeout=EXIT_GRACE)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all_at_exit)
