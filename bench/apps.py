"""The engine's bench app: ``python -m broker worker bench.apps:app``.

Each task does nothing but report to the probe, so what is measured is the engine.
Settings come from the environment (``LEVERET_URL``, ``LEVERET_NAMESPACE``) like any
worker's. With ``BENCH_OBSERVE=1`` the app also carries whatever metrics, JSON logging
and Sentry middleware the engine provides (see ``observability``).
"""

from __future__ import annotations

import importlib
import os

from pydantic import BaseModel

from bench.probe import probe
from broker import App, Middleware, RetryPolicy, Task, TaskContext


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


def observability() -> list[Middleware] | None:
    """The engine's metrics, JSON log and Sentry middleware, or None where it has none.

    Each module is looked up by name so this bench runs on any revision of the engine;
    a module may offer ``bench_middleware()`` (preferred) or a ``Middleware`` subclass.
    """
    found: list[Middleware] = []
    for name in ("broker.metrics", "broker.logs", "broker.sentry"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            return None
        factory = getattr(module, "bench_middleware", None)
        if factory is not None:
            found.extend(factory())
            continue
        classes = [
            v
            for v in vars(module).values()
            if isinstance(v, type) and issubclass(v, Middleware) and v is not Middleware
        ]
        if not classes:
            return None
        found.extend(cls() for cls in classes)
    return found


def _middleware() -> list[Middleware]:
    if os.environ.get("BENCH_OBSERVE") != "1":
        return []
    return observability() or []


app = App(app_id="bench", middleware=_middleware())


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
