"""Tasks for the operations tests, run by ``leveret worker tests.apps.ops_app:app``.

Each task appends ``<event> <task id> <redelivered>`` to the file named by
``OPS_LEDGER``, so a test in another process can see what ran and what finished.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from leveret import App, Permanent, RetryPolicy, Task, TaskContext
from tests.support.models import Sleep

app = App(app_id="ops-tests")

slow = Task("ops.slow", Sleep, queue="ops")
slow_sync = Task("ops.slow_sync", Sleep, queue="ops")


def record(event: str, ctx: TaskContext) -> None:
    path = os.environ.get("OPS_LEDGER")
    if path:
        with open(path, "a", encoding="utf-8") as ledger:
            ledger.write(f"{event} {ctx.task_id} {int(ctx.redelivered)}\n")


@app.handle(slow, retry=RetryPolicy(max_attempts=3, base=0.05))
async def run_slow(job: Sleep, ctx: TaskContext) -> None:
    record("start", ctx)
    await asyncio.sleep(job.seconds)
    record("done", ctx)


@app.handle(slow_sync, retry=RetryPolicy(max_attempts=3, base=0.05))
def run_slow_sync(job: Sleep, ctx: TaskContext) -> None:
    record("start", ctx)
    time.sleep(job.seconds)
    record("done", ctx)


block = Task("ops.block", Sleep, queue="ops")


@app.handle(block, timeout=60)
async def block_the_loop(job: Sleep, ctx: TaskContext) -> None:
    """A handler that wrongly blocks the event loop: the liveness probe must notice.

    It blocks for ``seconds``, or until the file ``OPS_RELEASE`` names exists, so that
    a test can look as long as it needs, on however busy a machine, and then let go.
    """
    record("start", ctx)
    release = os.environ.get("OPS_RELEASE")
    until = time.monotonic() + job.seconds
    while time.monotonic() < until and not (release and os.path.exists(release)):  # noqa: ASYNC240
        time.sleep(0.05)  # noqa: ASYNC251 - blocking on purpose
    record("done", ctx)


fail = Task("ops.fail", Sleep, queue="ops")


@app.handle(fail)
async def always_fail(job: Sleep, ctx: TaskContext) -> None:
    record("start", ctx)
    raise Permanent("this task can never succeed")


chatty = Task("ops.chatty", Sleep, queue="ops")
log = logging.getLogger("ops.chatty")


@app.handle(chatty)
async def talk(job: Sleep, ctx: TaskContext) -> None:
    """Logs a URL with a password in it, as careless code does."""
    log.info("fetching https://reporter:hunter2@reports.example.com/daily")
    record("done", ctx)
