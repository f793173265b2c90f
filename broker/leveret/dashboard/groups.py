"""Dead letters grouped by cause: task, error type and a fingerprint of the message.

Reading 100,000 dead letters takes RabbitMQ half a minute, far too long for a page.
So grouping runs in the background on a bounded scan (``scan_limit`` letters) and the
pages show the latest result with its age and whether it covered every letter. A
scan stops for a replay or purge (what it held goes back to the queue) and runs again
after it, so the groups an operator sees are at most one scan old.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from leveret.dashboard.fingerprint import fingerprint, shape
from leveret.deadletter import DeadLetter, DeadLetters, Filter, Group

log = logging.getLogger(__name__)


def key_of(letter: DeadLetter) -> str:
    """The group a dead letter belongs to."""
    return fingerprint(letter.task, letter.kind, letter.error_message or letter.describe())


@dataclass
class Cause(Group):
    """One group: a ``Group`` of the dead-letter summary, split by message shape."""

    key: str = ""
    shape: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "shape": self.shape, **super().as_dict()}


@dataclass(frozen=True)
class CauseFilter(Filter):
    """A ``Filter`` that also selects by group key, so that every dead-letter
    operation (replay, purge, export, a dry run) can take one group or several."""

    keys: tuple[str, ...] = ()

    def matches(self, letter: DeadLetter) -> bool:
        if self.keys and key_of(letter) not in self.keys:
            return False
        return super().matches(letter)

    def describe(self) -> str:
        base = super().describe()
        if not self.keys:
            return base
        groups = "group " + " or ".join(self.keys)
        return groups if base == "all" else f"{groups}, {base}"


@dataclass
class Snapshot:
    """The groups as of one scan."""

    groups: list[Cause] = field(default_factory=list)
    scanned: int = 0
    waiting: int = 0  # ready in the dead-letter queues when the scan began
    complete: bool = False  # every waiting letter was read
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None

    def find(self, key: str) -> Cause | None:
        return next((g for g in self.groups if g.key == key), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "waiting": self.waiting,
            "complete": self.complete,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "groups": [g.as_dict() for g in self.groups],
        }


class GroupIndex:
    """Keeps a ``Snapshot`` of the groups fresh, one bounded scan at a time."""

    def __init__(self, dead: DeadLetters, *, scan_limit: int, every: float) -> None:
        self.dead = dead
        self.scan_limit = scan_limit
        self.every = every
        self.snapshot = Snapshot()
        self.scanning: Snapshot | None = None  # the scan under way, for its progress
        self._wake = asyncio.Event()
        self._paused = 0
        self._scan: asyncio.Task[Snapshot] | None = None
        self._stopping = False

    async def run(self) -> None:
        """Scan now, then every ``every`` seconds or when asked; until ``stop``."""
        while not self._stopping:
            self._wake.clear()
            if not self._paused:
                self._scan = asyncio.create_task(self._scan_once())
                try:
                    self.snapshot = await self._scan
                except asyncio.CancelledError:
                    me = asyncio.current_task()
                    if me is not None and me.cancelling():
                        raise  # the index itself is stopping, not just this scan
                finally:
                    self._scan = None
                    self.scanning = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.every):
                    await self._wake.wait()

    def stop(self) -> None:
        """End ``run`` soon: a scan under way stops and gives its letters back.

        A flag rather than cancelling ``run``: a cancellation that reaches the scan
        can be absorbed by the AMQP client closing its channel, and then be lost."""
        self._stopping = True
        if self._scan is not None:
            self._scan.cancel()
        self._wake.set()

    def refresh(self) -> None:
        """Scan again as soon as possible."""
        self._wake.set()

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """No scan while a replay or purge runs: one under way is stopped (its
        letters go back to their queue first) and the next starts afterwards."""
        self._paused += 1
        try:
            scan = self._scan
            if scan is not None:
                scan.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(asyncio.wait({scan}))
            yield
        finally:
            self._paused -= 1
            self.refresh()

    async def _scan_once(self) -> Snapshot:
        snap = Snapshot(started_at=time.time())
        self.scanning = snap
        groups: dict[str, Cause] = {}
        try:
            sizes = await self.dead.sizes()
            snap.waiting = sum(sizes.values())
            async with contextlib.aclosing(self.dead.scan()) as letters:
                async for letter in letters:
                    key = key_of(letter)
                    cause = groups.get(key)
                    if cause is None:
                        text = letter.error_message or letter.describe()
                        cause = groups[key] = Cause(
                            letter.task, letter.kind, key=key, shape=shape(text)
                        )
                    cause.add(letter)
                    snap.scanned += 1
                    if snap.scanned >= self.scan_limit:
                        break
            snap.complete = snap.scanned >= snap.waiting
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # shown on the page; the next scan tries again
            log.warning("grouping the dead letters failed: %s", exc, exc_info=True)
            snap.error = f"{type(exc).__name__}: {exc}"
        snap.groups = sorted(groups.values(), key=lambda g: (-g.count, g.task or "", g.kind))
        snap.finished_at = time.time()
        return snap
