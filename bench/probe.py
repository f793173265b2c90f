"""What a benchmark worker reports to the process that measures it.

Progress goes through a small shared-memory file (one slot per worker: count, first and
last handler start), cheap enough to update on every task and readable while the worker
runs. Everything else (latency samples, task ids, peak RSS, CPU time) is written as JSON
when the worker exits. Both the engine's bench app and the raw baseline use this, so
their per-task overhead is the same.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import mmap
import os
import resource
import struct
import time
from pathlib import Path
from typing import Any

SLOT = struct.Struct("<qdd")  # count, first start, last start (time.time())
SLOTS = 8


def create(path: Path) -> None:
    path.write_bytes(b"\0" * SLOT.size * SLOTS)


def read(path: Path) -> list[tuple[int, float, float]]:
    data = path.read_bytes()
    return [SLOT.unpack_from(data, i * SLOT.size) for i in range(SLOTS)]


def peak_rss_mb() -> float:
    """This process's peak RSS. Not ``ru_maxrss``: Linux carries that across exec, so a
    worker spawned by a big parent would report the parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Probe:
    """Counts handler starts of one worker process; dumps its samples at exit."""

    def __init__(self) -> None:
        self.enabled = "BENCH_PROBE" in os.environ
        self.count = 0
        self.first = 0.0
        self.cpu_first = 0.0
        self.cpu_mark = (0, 0.0)
        self.samples: list[float] = []
        self.ids: list[str] = []
        self.keep_ids = os.environ.get("BENCH_IDS") == "1"
        self._gate = os.environ.get("BENCH_GATE", "")
        #: True until the bench opens the gate: handlers then wait, so that every worker
        #: is subscribed and holds its prefetch before the clock starts.
        self.gated = bool(self._gate) and not os.path.exists(self._gate)
        self._opened: asyncio.Event | None = None
        if not self.enabled:
            return
        self._offset = int(os.environ.get("BENCH_SLOT", "0")) * SLOT.size
        with open(os.environ["BENCH_PROBE"], "r+b") as f:
            self._map = mmap.mmap(f.fileno(), 0)
        self._out = os.environ.get("BENCH_OUT")
        atexit.register(self.dump)

    def hit(self, task_id: str = "") -> float:
        """A handler started; returns the time it did."""
        now = time.time()
        if not self.enabled:
            return now
        self.count += 1
        if self.count == 1:
            self.first = now
            self.cpu_first = time.process_time()
        elif not self.count & 255:
            self.cpu_mark = (self.count, time.process_time())
        SLOT.pack_into(self._map, self._offset, self.count, self.first, now)
        if self.keep_ids:
            self.ids.append(task_id)
        return now

    async def wait_gate(self) -> None:
        if self._opened is None:
            self._opened = asyncio.Event()
            asyncio.get_running_loop().create_task(self._poll_gate(self._opened))
        await self._opened.wait()

    async def _poll_gate(self, opened: asyncio.Event) -> None:
        # A file, not an event: the bench is another process. Polled before the clock starts.
        while not os.path.exists(self._gate):  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.002)
        self.gated = False
        opened.set()

    def dump(self) -> None:
        if not self._out:
            return
        usage = resource.getrusage(resource.RUSAGE_SELF)
        report: dict[str, Any] = {
            "count": self.count,
            "rss_peak_mb": peak_rss_mb(),
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "cpu_per_task_ms": (self.cpu_mark[1] - self.cpu_first) * 1000 / (self.cpu_mark[0] - 1)
            if self.cpu_mark[0] > 1
            else None,
            "samples": self.samples,
            "ids": self.ids,
        }
        Path(self._out).write_text(json.dumps(report))


probe = Probe()
