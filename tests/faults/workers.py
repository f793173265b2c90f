"""Worker processes for fault scenarios: started, signalled, respawned like a Deployment.

Each worker is ``python -m leveret worker tests.apps.faults_app:app`` with its own log
file, started by tests.support.workers like every worker process of the suite.
``supervise`` keeps a number of them alive, as Kubernetes would after a crash, until
``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.workers import start_worker

APP = "tests.apps.faults_app:app"


@dataclass(eq=False)
class WorkerProc:
    proc: subprocess.Popen[bytes]
    log: Path
    started: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def ready(self) -> bool:
        return " consuming " in self.output()


@dataclass
class Workers:
    """Every worker process one scenario started; all are killed at the end."""

    env: dict[str, str]
    logdir: Path
    concurrency: int = 8
    shutdown_timeout: float = 10.0
    procs: list[WorkerProc] = field(default_factory=list)
    kills: list[tuple[int, float]] = field(default_factory=list)  # (pid, when)
    respawned: int = 0
    closed: bool = False
    _supervisor: asyncio.Task[None] | None = None

    def spawn(self, *extra: str, log_level: str = "INFO") -> WorkerProc:
        if self.closed:
            raise RuntimeError("this scenario's workers were stopped")
        log = self.logdir / f"worker-{len(self.procs):04d}.log"
        proc = start_worker(
            APP,
            "--concurrency",
            str(self.concurrency),
            "--shutdown-timeout",
            str(self.shutdown_timeout),
            *extra,
            env=self.env,
            log=log,
            log_level=log_level,
        )
        worker = WorkerProc(proc, log, time.time())
        self.procs.append(worker)
        return worker

    @property
    def alive(self) -> list[WorkerProc]:
        return [w for w in self.procs if w.alive]

    async def wait_ready(self, workers: list[WorkerProc] | None = None, within: float = 60) -> None:
        workers = workers if workers is not None else self.alive
        deadline = time.monotonic() + within
        while not all(w.ready for w in workers):
            dead = [w for w in workers if not w.alive]
            if dead:
                raise AssertionError(f"worker {dead[0].pid} exited:\n{dead[0].output()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"workers not consuming within {within:.0f} s")
            await asyncio.sleep(0.1)

    def kill(self, worker: WorkerProc, sig: int = signal.SIGKILL) -> None:
        if sig == signal.SIGKILL:
            self.kills.append((worker.pid, time.time()))
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, sig)

    def supervise(self, keep: int) -> None:
        """Keep ``keep`` workers alive, respawning dead ones, until ``stop_supervising``."""
        self._supervisor = asyncio.create_task(self._respawn(keep))

    async def _respawn(self, keep: int) -> None:
        while not self.closed:
            for _ in range(keep - len(self.alive)):
                self.spawn()
                self.respawned += 1
            await asyncio.sleep(0.1)

    async def stop_supervising(self) -> None:
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_exit(self, worker: WorkerProc, within: float) -> int | None:
        """The exit code once the process has ended, or None after ``within`` s."""
        deadline = time.monotonic() + within
        while worker.alive and time.monotonic() < deadline:  # noqa: ASYNC110 - a process, no event
            await asyncio.sleep(0.05)
        return worker.proc.poll()

    async def close(self) -> None:
        """Stop respawning, then kill every worker process and reap it."""
        await self.stop_supervising()
        self.closed = True
        self.stop_all()

    def stop_all(self) -> None:
        for worker in self.procs:
            if worker.alive:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
        for worker in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(timeout=10)

    def outputs(self) -> str:
        return "\n".join(w.output() for w in self.procs)
