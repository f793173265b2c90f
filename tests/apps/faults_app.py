"""The app the fault suite's worker processes run: one task whose payload says how to behave.

``leveret worker tests.apps.faults_app:app`` builds it from the environment; a test
builds the same contract and queue with ``build(settings, ...)`` to send to it.
Every handler run is written to the ledger file ``FAULTS_LEDGER`` (see
tests/faults/ledger.py): a ``start`` line before the work, a ``done`` line after it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from pydantic import BaseModel

from leveret import App, RetryPolicy, Settings, Task, TaskContext
from leveret.message import REPLAYS
from tests.faults.ledger import append_line

QUEUE = "work"


class Job(BaseModel):
    """What the handler should do: work for ``ms``, fail the first ``fail`` attempts
    (and, with ``heal_on_replay``, only until it is replayed from the dead letters), or
    kill its own worker process (``poison``)."""

    n: int
    ms: int = 0
    fail: int = 0
    poison: bool = False
    heal_on_replay: bool = False


job = Task("faults.job", Job, queue=QUEUE)


def build(
    settings: Settings | None = None,
    *,
    queue_type: str | None = None,
    delivery_limit: int | None = None,
    max_length: int | None = None,
    max_attempts: int | None = None,
    task_timeout: float | None = None,
) -> App:
    """The app, configured by arguments or else by ``FAULTS_*`` environment variables."""
    env = os.environ
    app = App(settings, app_id="faults") if settings else App(app_id="faults")
    queue_type = queue_type or env.get("FAULTS_QUEUE_TYPE") or None
    limit = delivery_limit or int(env.get("FAULTS_DELIVERY_LIMIT", "10"))
    length = max_length or int(env.get("FAULTS_MAX_LENGTH", "0")) or None
    app.queue(
        QUEUE,
        type=queue_type,  # type: ignore[arg-type]
        delivery_limit=limit,
        max_length=length,
        overflow="reject-publish" if length else None,
    )
    attempts = max_attempts or int(env.get("FAULTS_MAX_ATTEMPTS", "5"))
    policy = RetryPolicy(max_attempts=attempts, base=0.05, factor=2.0, cap=0.5, jitter="none")
    limit_s = task_timeout or float(env.get("FAULTS_TASK_TIMEOUT", "0")) or None
    ledger = env.get("FAULTS_LEDGER", "")
    healed = env.get("FAULTS_HEALED") == "1"  # planned failures no longer happen

    @app.handle(job, retry=policy, timeout=limit_s)
    async def run_job(payload: Job, ctx: TaskContext) -> None:
        if ledger:
            count = "-" if ctx.delivery_count is None else str(ctx.delivery_count)
            append_line(
                ledger,
                f"start {ctx.task_id} {os.getpid()} {ctx.attempt} {int(ctx.redelivered)} "
                f"{count} {time.time():.4f}",
            )
        if payload.poison:
            os.kill(os.getpid(), signal.SIGKILL)
        if payload.ms:
            await asyncio.sleep(payload.ms / 1000)
        replayed = payload.heal_on_replay and bool(ctx.headers.get(REPLAYS))
        if ctx.attempt <= payload.fail and not healed and not replayed:
            until = " until replayed" if payload.heal_on_replay else ""
            raise RuntimeError(f"planned failure of attempt {ctx.attempt} of {payload.fail}{until}")
        if ledger:
            append_line(ledger, f"done {ctx.task_id} {os.getpid()} {ctx.attempt} {time.time():.4f}")

    return app


app = build()
