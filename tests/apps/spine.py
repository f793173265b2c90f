"""A worker app for tests that run workers as processes: it records every run.

``TEST_LEDGER`` names a file; each run appends ``start <id> <redelivered>`` before
the handler's work and ``done <id>`` after it.
"""

from __future__ import annotations

import asyncio
import os

from pydantic import BaseModel

from leveret import App, Task, TaskContext


class Job(BaseModel):
    seconds: float = 0.0


job = Task("spine.job", Job, queue="jobs")

app = App(app_id="spine-tests")


def record(line: str) -> None:
    with open(os.environ["TEST_LEDGER"], "a", encoding="utf-8") as ledger:
        ledger.write(line + "\n")


@app.handle(job)
async def run_job(payload: Job, ctx: TaskContext) -> None:
    record(f"start {ctx.task_id} {int(ctx.redelivered)}")
    await asyncio.sleep(payload.seconds)
    record(f"done {ctx.task_id}")
