"""Starting workers for a test: in this event loop, or as ``leveret worker`` processes.

In-process (``running``) a test can look at the worker's counts and its handlers'
side effects directly. As a process (``start_worker``) it gets what production gets:
signals, exit codes, the CLI's flags and environment, a process that can be killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import IO

from leveret import Worker
from tests.support import ROOT
from tests.support.processes import Output, leveret_command, leveret_env
from tests.support.waiting import wait_for

#: The ``spawn_worker`` fixture: ``spawn(app, *flags, env={...})`` -> the process.
Spawn = Callable[..., subprocess.Popen[bytes]]


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """Run a worker in this event loop for the duration of the block, then drain it."""
    task = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: worker.ready or task.done(), what="the worker never got ready")
        if task.done():
            task.result()
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, timeout=worker.shutdown_timeout + 30)


def start_worker(
    app: str,
    *args: str,
    env: Mapping[str, str],
    log: Path | None = None,
    log_level: str | None = None,
) -> subprocess.Popen[bytes]:
    """``leveret [--log-level L] worker APP ARGS`` with ``env`` over this environment.

    Its output goes to the file ``log`` when given (for processes that outlive a
    reader, or many of them), else to a pipe that an ``Output`` reads at once: a full
    pipe nobody reads would block a chatty worker.
    """
    command = leveret_command(
        *(("--log-level", log_level) if log_level else ()), "worker", app, *args
    )

    def start(stdout: IO[bytes] | int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command,
            env=leveret_env(extra=env),
            cwd=ROOT,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    if log is not None:
        with log.open("wb") as sink:
            return start(sink)
    proc = start(subprocess.PIPE)
    Output(proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill a worker process if it still runs, reap it, and finish reading its output."""
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    if proc.stdout is not None:
        Output(proc).join()
        proc.stdout.close()
