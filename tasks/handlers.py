"""Handlers of the demo tasks, run by ``leveret worker tasks.handlers:app``.

They stand in for real work with a short sleep. When ``DEMO_LEDGER`` names a file,
each completed task appends a line to it, so the demo can count what was done.
"""

from __future__ import annotations

import asyncio
import os
import time

from leveret import App, RetryPolicy, TaskContext
from tasks.contracts import Receipt, Thumbnail, make_thumbnail, send_receipt

app = App(app_id="demo")


def _record(ctx: TaskContext, priority: int) -> None:
    path = os.environ.get("DEMO_LEDGER")
    if path:
        # One short O_APPEND write per line: lines from several processes never interleave.
        with open(path, "a", encoding="utf-8") as ledger:
            line = f"{ctx.task_id} {ctx.name} {priority} {int(ctx.redelivered)} {ctx.attempt}\n"
            ledger.write(line)


@app.handle(send_receipt)
async def deliver_receipt(receipt: Receipt, ctx: TaskContext) -> None:
    await asyncio.sleep(0.002)  # an SMTP call
    _record(ctx, int(receipt.note or 0))


class StorageBusy(Exception):
    """The image store asked us to come back later."""


@app.handle(make_thumbnail, retry=RetryPolicy(max_attempts=5, base=0.5), timeout=10)
def render_thumbnail(thumb: Thumbnail, ctx: TaskContext) -> None:
    time.sleep(0.001)  # CPU-bound work runs in the worker's thread pool
    if ctx.attempt == 1 and int(thumb.image_id[:4], 16) % 20 == 0:
        raise StorageBusy("image store busy")  # one in twenty, retried by the broker
    _record(ctx, thumb.width % 10)
