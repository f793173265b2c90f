"""Tasks for the operations tests, run by ``leveret worker tests.apps.ops_app:app``.

Each task appends ``<event> <task id> <redelivered>`` to the file named by
``OPS_LEDGER``, so a test in another process can see what ran and what finished.
"""

from __future__ import annotations

import asyncio
import os
import time

from pydantic import BaseModel

from broker import App, RetryPolicy, Task, TaskContext

app = App(app_id="ops-tests")


class Sleep(BaseModel):
    seconds: float


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
