"""The engine's bench app: the tasks ``bench.worker`` runs (or ``leveret worker bench.apps:app``).

Each task does nothing but report to the probe, so what is measured is the engine.
Settings come from the environment (``LEVERET_URL``, ``LEVERET_NAMESPACE``) like any
worker's; ``bench.worker`` runs it.
"""

from __future__ import annotations

from pydantic import BaseModel

from bench.probe import probe
from leveret import App, RetryPolicy, Task, TaskContext


class Job(BaseModel):
    """A task's arguments: a sequence number and, for latency, when it was sent or is due."""

    n: int
    at: float = 0.0


noop = Task("bench.noop", Job, queue="work")
stamped = Task("bench.stamped", Job, queue="latency")
flaky = Task("bench.flaky", Job, queue="retry")
delayed = Task("bench.delayed", Job, queue="delays")

#: Retry once after 10 ms: one pass through delay level 0.
RETRY_ONCE = RetryPolicy(max_attempts=3, base=0.01, jitter="none")


app = App(app_id="bench")


@app.handle(noop)
async def run_noop(job: Job, ctx: TaskContext) -> None:
    if probe.gated:
        await probe.wait_gate()
    probe.hit(ctx.task_id)


@app.handle(stamped)
async def run_stamped(job: Job) -> None:
    probe.samples.append(probe.hit() - job.at)


@app.handle(flaky, retry=RETRY_ONCE)
async def run_flaky(job: Job, ctx: TaskContext) -> None:
    if probe.gated:
        await probe.wait_gate()
    probe.hit(ctx.task_id)
    if ctx.attempt == 1:
        raise RuntimeError("fails once")


@app.handle(delayed)
async def run_delayed(job: Job) -> None:
    probe.samples.append(probe.hit() - job.at)
