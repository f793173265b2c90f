"""``worker``: run an app's tasks until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from broker.cli.common import add_app_argument, console, env_default, load_app
from broker.worker import Worker

log = logging.getLogger("leveret.cli")


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
        "--shutdown-timeout",
        type=float,
        default=env_default("shutdown_timeout", 30.0),
        help="seconds running tasks get to finish on SIGTERM; keep Kubernetes' "
        "terminationGracePeriodSeconds above it (default 30)",
    )
    worker.set_defaults(run=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    worker = Worker(
        app,
        queues=args.queues.split(",") if args.queues else None,
        concurrency=args.concurrency,
        shutdown_timeout=args.shutdown_timeout,
    )
    asyncio.run(serve(worker))
    return 0


async def serve(worker: Worker) -> None:
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
    try:
        await worker.run()
    finally:
        await worker.app.close()
