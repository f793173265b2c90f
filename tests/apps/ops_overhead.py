"""What metrics, logs and Sentry cost per task: a drain of a pre-filled queue, bare and
with each middleware, against the RabbitMQ of ``find_broker()``.

    .venv/bin/python -m tests.apps.ops_overhead [--tasks 20000] [--rounds 3]

Prints first what each middleware's hooks cost per task, called directly (the
steadiest figure), then, per setup (best of the rounds), tasks/s and the worker
process's CPU time per task against bare. On a shared machine wall-clock throughput
moves with whatever else runs. Figures, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable

import sentry_sdk

from leveret import App, Middleware, Worker
from leveret.ops.discovery import find_broker
from leveret.ops.logs import TaskLog, configure
from leveret.ops.metrics import Metrics
from leveret.ops.sentry import SentryMiddleware
from tests.support.amqp import delete_namespace
from tests.support.models import Job as Noop


def null_sentry(rate: float) -> None:
    """A real client whose transport drops envelopes: the SDK's own cost, no network."""
    sentry_sdk.init(
        dsn="http://public@127.0.0.1:9/1",
        traces_sample_rate=rate,
        transport=lambda envelope: None,
    )


SETUPS: dict[str, Callable[[], list[Middleware]]] = {
    "bare": lambda: [],
    "metrics": lambda: [Metrics()],
    "logs (json)": lambda: [TaskLog()],
    "sentry, unsampled": lambda: [SentryMiddleware()],
    "all, sentry unsampled": lambda: [Metrics(), SentryMiddleware(), TaskLog()],
    "all, sentry traces 10%": lambda: [Metrics(), SentryMiddleware(), TaskLog()],
}


async def drain(url: str, setup: str, tasks: int) -> tuple[float, float]:
    """Tasks per second, and CPU microseconds per task, while one worker empties a
    queue of ``tasks`` no-op tasks."""
    if "sentry" in setup:
        null_sentry(0.1 if "10%" in setup else 0.0)
    app = App(url=url, namespace=f"bench{uuid.uuid4().hex[:8]}")
    done = asyncio.Event()
    count = 0

    @app.task(name="bench.noop", queue="bench")
    async def noop(msg: Noop) -> None:
        nonlocal count
        count += 1
        if count == tasks:
            done.set()

    for mw in SETUPS[setup]():
        if isinstance(mw, Metrics):
            mw.install(app)
        else:
            app.middleware.append(mw)
    try:
        await app.declare()
        await app.send_many(noop, [Noop(n=i) for i in range(tasks)])
        worker = Worker(app, concurrency=64)
        if any(isinstance(mw, Metrics) for mw in app.middleware):
            next(mw for mw in app.middleware if isinstance(mw, Metrics)).watch(worker)
        started, cpu = time.perf_counter(), time.process_time()
        run = asyncio.create_task(worker.run())
        await done.wait()
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
        worker.request_stop()
        await run
        return tasks / took, cpu / tasks * 1e6
    finally:
        await app.close()
        await delete_namespace(url, app.settings, ["bench"])
        sentry_sdk.get_client().close()
        sentry_sdk.init()


def default() -> list[Middleware]:
    return [Metrics(), SentryMiddleware(), TaskLog()]


def hook_costs(repeat: int = 20000) -> None:
    """Microseconds per task of each middleware's before_task + after_task."""
    from leveret import Outcome, TaskContext, message

    def per_task(middleware: list[Middleware], headers: dict[str, object]) -> float:
        return asyncio.run(on_a_loop(middleware, headers))

    async def on_a_loop(middleware: list[Middleware], headers: dict[str, object]) -> float:
        """As in a worker: on the event loop, a turn every 64 tasks (log lines are
        written once per turn)."""
        started = time.process_time()
        for i in range(repeat):
            ctx = TaskContext(
                task_id="a3410e60a97c44ff892b2787b81b3105",
                name="bench.noop",
                queue="bench",
                attempt=1,
                redelivered=False,
                headers=headers,
                published_at_ms=message.now_ms(),
                state={"body_size": 12},
            )
            for mw in middleware:
                mw.before_task(ctx)
            for mw in middleware:
                mw.after_task(ctx, Outcome.SUCCEEDED, None, 0.001)
            if i % 64 == 63:
                await asyncio.sleep(0)
        return (time.process_time() - started) / repeat * 1e6

    unsampled = {"sentry-trace": "771a43a4192642f0b136d5159a501700-b1bbaf3c26b5f7a1-0"}
    sampled = {"sentry-trace": "771a43a4192642f0b136d5159a501700-b1bbaf3c26b5f7a1-1"}
    base = per_task([], {})
    print(f"{'hooks per task':<34} {'us':>7}")
    print(f"{'  (a TaskContext, no middleware)':<34} {base:7.1f}")
    print(f"{'  metrics':<34} {per_task([Metrics()], {}) - base:7.1f}")
    print(f"{'  task log event (json)':<34} {per_task([TaskLog()], {}) - base:7.1f}")
    null_sentry(0.0)
    print(
        f"{'  sentry, task not traced':<34} {per_task([SentryMiddleware()], unsampled) - base:7.1f}"
    )
    print(f"{'  sentry, task traced':<34} {per_task([SentryMiddleware()], sampled) - base:7.1f}")
    print(f"{'  all three, not traced':<34} {per_task(default(), unsampled) - base:7.1f}")
    sentry_sdk.get_client().close()
    sentry_sdk.init()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hooks-only", action="store_true", help="skip the drains")
    args = parser.parse_args()
    devnull = open(os.devnull, "w")  # noqa: SIM115 - for the whole run
    configure("INFO", "json", devnull)  # log events are formatted and written, to nowhere
    logging.getLogger("leveret.delivery").setLevel(logging.WARNING)
    hook_costs()
    if args.hooks_only:
        return
    found = find_broker()
    try:
        rates: dict[str, float] = {}
        cpus: dict[str, float] = {}
        for _ in range(args.rounds):
            for setup in SETUPS:
                rate, cpu = asyncio.run(drain(found.url, setup, args.tasks))
                rates[setup] = max(rates.get(setup, 0.0), rate)
                cpus[setup] = min(cpus.get(setup, float("inf")), cpu)
        for setup in SETUPS:
            rate, cpu = rates[setup], cpus[setup]
            print(
                f"{setup:<24} {rate:7.0f} tasks/s {100 * (rate / rates['bare'] - 1):+6.1f} %"
                f"   {cpu:6.1f} us CPU/task {100 * (cpu / cpus['bare'] - 1):+6.1f} %"
            )
    finally:
        found.close()


if __name__ == "__main__":
    main()
