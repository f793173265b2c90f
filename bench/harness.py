"""Running a benchmark: the broker, a namespace, worker processes, filling queues.

Every scenario runs under one namespace unique to this run; everything declared under
it is deleted at the end. Workers are separate processes, started and stopped here,
reporting through ``bench.probe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiormq

from bench import apps, probe
from bench.sentry_sink import SentrySink
from leveret import App, Task
from leveret.amqp.topology import Names

ROOT = Path(__file__).resolve().parent.parent
QUEUES = ("work", "latency", "rawlatency", "retry", "delays")
CONTRACTS = (apps.noop, apps.stamped, apps.flaky, apps.delayed)


class BenchError(RuntimeError):
    """A scenario could not be measured (a worker died, or never finished)."""


@dataclass
class Report:
    """What a worker process said when it exited."""

    count: int
    rss_peak_mb: float
    cpu_s: float
    cpu_per_task_ms: float | None
    samples: list[float]
    ids: list[str]


@dataclass
class WorkerProc:
    kind: str  # "leveret" or "raw"
    proc: subprocess.Popen[bytes]
    out: Path
    log: Path

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise BenchError(f"{self.kind} worker exited with {self.proc.returncode}:\n{tail}")


@dataclass
class Harness:
    url: str
    namespace: str
    tmp: Path
    app: App = field(init=False)
    names: Names = field(init=False)
    _conn: Any = None
    _channel: Any = None
    _serial: int = 0
    #: Figures one scenario measured that another reuses (the 1-worker drain).
    cache: dict[str, Any] = field(default_factory=dict)
    #: Where workers with observability on send their Sentry envelopes.
    sentry: SentrySink = field(default_factory=SentrySink)

    def __post_init__(self) -> None:
        self.names = Names(self.namespace)
        self.app = App(url=self.url, namespace=self.namespace, app_id="bench")
        for task in CONTRACTS:
            self.app.add(task)

    # -- broker -------------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Declare the topology; return the broker's server properties."""
        await self.app.declare(QUEUES)
        await self.sentry.start()
        self._conn = await aiormq.connect(self.url)
        self._channel = await self._conn.channel(publisher_confirms=True)
        props = dict(self._conn.server_properties)
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in props.items()}

    async def close(self) -> None:
        """Delete everything declared under the namespace."""
        with contextlib.suppress(Exception):
            await self.app.close()
        await self.sentry.close()
        ch, n = self._channel, self.names
        for queue in QUEUES:
            await ch.queue_delete(n.work_queue(queue))
            await ch.queue_delete(n.dead_queue(queue))
        levels = self.app.settings.delay_levels
        for level in range(levels):
            await ch.queue_delete(n.delay_level(level))
            await ch.exchange_delete(n.delay_level(level))
        await ch.queue_delete(n.unroutable)
        for exchange in (n.tasks_exchange, n.delivery_exchange, n.dead_exchange, n.unroutable):
            await ch.exchange_delete(exchange)
        await self._conn.close()

    async def depth(self, queue: str) -> tuple[int, int]:
        """Ready messages and consumers of a work queue."""
        ok = await self._channel.queue_declare(self.names.work_queue(queue), passive=True)
        return ok.message_count, ok.consumer_count

    async def purge(self, queue: str) -> None:
        await self._channel.queue_purge(self.names.work_queue(queue))

    async def fill(self, task: Task[Any], count: int) -> None:
        """Put ``count`` tasks on the task's queue (not a measured figure: the same for
        the engine and the baseline)."""
        for start in range(0, count, 10000):
            jobs = [apps.Job(n=i) for i in range(start, min(start + 10000, count))]
            await self.app.send_many(task, jobs)

    # -- workers ------------------------------------------------------------------

    def spawn(
        self,
        kind: str,
        queue: str,
        concurrency: int,
        *,
        slot: int = 0,
        env: dict[str, str] | None = None,
    ) -> WorkerProc:
        """Start a worker process of the engine (``leveret``) or the baseline (``raw``)."""
        self._serial += 1
        tag = f"{self._serial:02d}-{kind}-{queue}-{slot}"
        out, log = self.tmp / f"{tag}.json", self.tmp / f"{tag}.log"
        full_env = {
            **os.environ,
            "LEVERET_URL": self.url,
            "LEVERET_NAMESPACE": self.namespace,
            "PYTHONPATH": str(ROOT),
            "BENCH_PROBE": str(self.tmp / "probe"),
            "BENCH_SLOT": str(slot),
            "BENCH_OUT": str(out),
            "BENCH_GATE": str(self.tmp / "gate"),
            "BENCH_SENTRY_DSN": self.sentry.dsn,
            **(env or {}),
        }
        if kind == "leveret":
            argv = ["-m", "bench.worker", queue, "--concurrency", str(concurrency)]
            if full_env.get("BENCH_OBSERVE") == "1":
                argv.append("--observe")
        else:
            argv = ["-m", "bench.raw", self.names.work_queue(queue), "--prefetch"]
            argv += [str(concurrency), "--url", self.url, "--namespace", self.namespace]
        with open(log, "wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, *argv], env=full_env, cwd=ROOT, stdout=sink, stderr=sink
            )
        return WorkerProc(kind, proc, out, log)

    def reset_probe(self, gate: bool) -> None:
        probe.create(self.tmp / "probe")
        gate_file = self.tmp / "gate"
        gate_file.unlink(missing_ok=True)
        if not gate:
            gate_file.touch()

    def open_gate(self) -> float:
        now = time.time()
        (self.tmp / "gate").touch()
        return now

    def progress(self) -> list[tuple[int, float, float]]:
        return probe.read(self.tmp / "probe")

    async def wait_consumers(self, queue: str, count: int, workers: Sequence[WorkerProc]) -> None:
        deadline = time.monotonic() + 90
        while (await self.depth(queue))[1] < count:
            for w in workers:
                w.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"workers on {queue} did not subscribe within 90 s")
            await asyncio.sleep(0.05)

    async def wait_count(
        self, total: int, workers: Sequence[WorkerProc], limit: float
    ) -> list[tuple[int, float, float]]:
        """Poll until the workers together started ``total`` handlers."""
        deadline = time.monotonic() + limit
        while True:
            slots = self.progress()
            done = sum(s[0] for s in slots)
            if done >= total:
                return slots
            for w in workers:
                w.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"only {done} of {total} tasks ran within {limit:.0f} s")
            await asyncio.sleep(0.02)

    async def stop(self, workers: Sequence[WorkerProc]) -> list[Report]:
        """SIGTERM (graceful: running tasks finish, acks go out), then read the reports."""
        for w in workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        while any(w.proc.poll() is None for w in workers):
            if time.monotonic() > deadline:
                for w in workers:
                    if w.proc.poll() is None:
                        w.proc.kill()
                raise BenchError("a worker did not exit within 60 s of SIGTERM")
            await asyncio.sleep(0.05)
        reports = []
        for w in workers:
            if not w.out.exists():
                tail = w.log.read_text(errors="replace")[-3000:]
                raise BenchError(f"{w.kind} worker left no report:\n{tail}")
            reports.append(Report(**json.loads(w.out.read_text())))
        return reports
