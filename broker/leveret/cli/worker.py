"""``worker``: run an app's tasks until SIGTERM or SIGINT, with health, metrics, logs, Sentry."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import threading
import time

from leveret.cli.common import (
    add_app_argument,
    add_health_arguments,
    add_log_format_argument,
    console,
    env_default,
    load_app,
)
from leveret.errors import ConfigError
from leveret.middleware import Middleware
from leveret.ops import logs, loops
from leveret.ops import sentry as sentry_setup
from leveret.ops.health import HealthServer, start_or_warn, worker_routes
from leveret.ops.metrics import Metrics
from leveret.worker import Worker

log = logging.getLogger(__name__)

#: Set by the ``--processes`` parent in its children's environment.
SUPERVISOR_PID = "LEVERET_SUPERVISOR_PID"
HEALTH_FD = "LEVERET_HEALTH_FD"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = commands.add_parser("worker", help="run tasks from the app's queues")
    add_app_argument(worker)
    worker.add_argument(
        "--queues",
        default=env_default("queues", None),
        help="comma-separated queues to consume (default: every queue with a handler)",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        default=env_default("concurrency", 32),
        help="tasks run at once per process, and the prefetch count (default 32)",
    )
    worker.add_argument(
        "--processes",
        type=int,
        default=env_default("processes", 1),
        help="worker processes under one parent that forwards signals and restarts a "
        "process that dies (default 1: no parent)",
    )
    worker.add_argument(
        "--shutdown-timeout",
        type=float,
        default=env_default("shutdown_timeout", 30.0),
        help="seconds running tasks get to finish on SIGTERM; keep Kubernetes' "
        "terminationGracePeriodSeconds above it (default 30)",
    )
    add_health_arguments(worker)
    worker.add_argument(
        "--loop",
        choices=loops.LOOPS,
        default=env_default("loop", "auto"),
        help="event loop: uvloop, asyncio, or auto: uvloop where it is installed "
        "(pip install 'leveret[uvloop]'), else asyncio (default auto)",
    )
    add_log_format_argument(worker)
    worker.add_argument(
        "--sentry-dsn",
        default=env_default("sentry_dsn", None),
        help="report dead-lettered tasks and traces to Sentry (not needed if the app "
        "calls sentry_sdk.init itself)",
    )
    worker.add_argument(
        "--sentry-traces-sample-rate",
        type=float,
        default=env_default("sentry_traces_sample_rate", 0.0),
        help="share of tasks traced when the sender did not decide (default 0: follow "
        "the sender's sampling decision)",
    )
    worker.add_argument(
        "--sentry-report-retries",
        action="store_true",
        default=env_default("sentry_report_retries", False),
        help="report every failed attempt to Sentry, not only dead-lettered tasks",
    )
    worker.set_defaults(run=run_worker)


class EarlySignal:
    """Remembers a SIGTERM/SIGINT that arrives while the app is still being imported.

    Without it a worker stopped during start-up (a scale-down right after a scale-up)
    dies of the signal instead of exiting 0.
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._note)

    def _note(self, signum: int, _frame: object) -> None:
        self.received = signal.Signals(signum)


def run_worker(args: argparse.Namespace) -> int:
    early = EarlySignal()
    if args.processes < 1:
        raise ConfigError("--processes must be at least 1")
    loops.loop_factory(args.loop)  # a loop that cannot be had is refused before anything starts
    logs.configure(args.log_level, args.log_format)
    app = load_app(args.app)
    worker = Worker(
        app,
        queues=args.queues.split(",") if args.queues else None,
        concurrency=args.concurrency,
        shutdown_timeout=args.shutdown_timeout,
    )
    if args.processes > 1:
        from leveret.ops.processes import Supervisor

        return Supervisor.from_args(args).run()

    if sentry_setup.setup(args.sentry_dsn, traces_sample_rate=args.sentry_traces_sample_rate):
        reporter = sentry_setup.SentryMiddleware(report_retries=args.sentry_report_retries)
        _add(app.middleware, reporter)
    _add(app.middleware, logs.TaskLog())
    installed = [m for m in app.middleware if isinstance(m, Metrics)]
    metrics = (installed[0] if installed else Metrics()).install(app).watch(worker)

    health: HealthServer | None = None
    inherited = os.environ.get(HEALTH_FD)
    if inherited:
        import socket

        sock = socket.socket(fileno=int(inherited))
        health = HealthServer(worker_routes(worker, metrics), sock=sock)
    elif args.health_port:
        health = HealthServer(
            worker_routes(worker, metrics), host=args.health_host, port=args.health_port
        )
    loops.run(serve(worker, health, early), args.loop)
    _exit_if_threads_left()
    return 0


def _add(middleware: list[Middleware], mw: Middleware) -> None:
    """Add ``mw`` unless the app installed one of its kind itself."""
    if not any(isinstance(m, type(mw)) for m in middleware):
        middleware.append(mw)


async def serve(
    worker: Worker, health: HealthServer | None = None, early: EarlySignal | None = None
) -> None:
    """Run until a signal: the first drains, a second SIGINT exits at once."""
    loop = asyncio.get_running_loop()
    signals = {"count": 0}

    def on_signal(sig: signal.Signals) -> None:
        signals["count"] += 1
        if signals["count"] > 1 and sig == signal.SIGINT:
            console.print("second interrupt: exiting now; unfinished tasks will be redelivered")
            os._exit(130)
        log.info("%s received: finishing running tasks, taking no new ones", sig.name)
        worker.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    log.info("event loop: %s", loops.describe(loop))
    if early is not None and early.received is not None:
        on_signal(early.received)
    health = await start_or_warn(health)
    orphan_watch = _watch_parent(worker)
    try:
        await worker.run()
    finally:
        if orphan_watch is not None:
            orphan_watch.cancel()
        if health is not None:
            await health.close()
        await worker.app.close()


def _watch_parent(worker: Worker) -> asyncio.Task[None] | None:
    """Under ``--processes``: drain and exit if the parent dies (no orphans left)."""
    parent = os.environ.get(SUPERVISOR_PID)
    if not parent:
        return None

    async def watch() -> None:
        while os.getppid() == int(parent):  # noqa: ASYNC110 - no event tells us this
            await asyncio.sleep(1.0)
        log.warning("the supervising process %s is gone: stopping", parent)
        worker.request_stop()

    return asyncio.get_running_loop().create_task(watch())


def _exit_if_threads_left() -> None:
    """Sync tasks still running past the shutdown timeout must not hold the exit.

    Their deliveries were already returned to the queue; Python would otherwise wait
    for their threads at exit, past the grace period, until the kubelet's SIGKILL.
    """
    threads = [t for t in threading.enumerate() if t.name.startswith("leveret-task")]
    deadline = time.monotonic() + 0.5
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    left = sum(t.is_alive() for t in threads)
    if not left:
        return
    log.warning("%d task threads still running after the shutdown: exiting without them", left)
    with contextlib.suppress(Exception):
        import sentry_sdk

        sentry_sdk.flush(timeout=2)
    logging.shutdown()
    os._exit(0)
