"""``scheduler``: run an app's schedules (any number of replicas, one fires);
``schedules list`` and ``schedules run NAME``: see them, fire one now.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from datetime import UTC, datetime

from rich.table import Table

from leveret.app import App
from leveret.cli.common import add_health_arguments, add_log_format_argument, env_default, out
from leveret.errors import ConfigError
from leveret.ops import logs
from leveret.ops import sentry as sentry_setup
from leveret.ops.health import TEXT, HealthServer, Response, Route, start_or_warn
from leveret.scheduler import Scheduler, Schedules, Status, read_status, run_now
from leveret.scheduler.control import overview
from leveret.scheduler.schedules import schedules_of

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser(
        "scheduler", help="fire the app's schedules (run several: one leads, the rest stand by)"
    )
    _add_target(run)
    add_health_arguments(run)
    run.add_argument(
        "--queue-type",
        choices=("classic", "quorum"),
        default=env_default("scheduler_queue_type", "classic"),
        help="type of the lease queue that holds the last fired slots; quorum in a "
        "cluster (env LEVERET_SCHEDULER_QUEUE_TYPE, default classic; fixed once declared)",
    )
    add_log_format_argument(run)
    run.add_argument(
        "--sentry-dsn",
        default=env_default("sentry_dsn", None),
        help="Sentry DSN (not needed if the app calls sentry_sdk.init itself)",
    )
    run.add_argument(
        "--sentry-crons",
        action="store_true",
        default=env_default("sentry_crons", False),
        help="send a Sentry Crons check-in for every slot fired (monitor slug = schedule name)",
    )
    run.set_defaults(run=run_scheduler)

    group = commands.add_parser("schedules", help="list the schedules, or fire one now")
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = verbs.add_parser("list", help="next fire times, last fired slots, the leader")
    _add_target(listing)
    listing.set_defaults(run=run_list)
    once = verbs.add_parser("run", help="send a schedule's task once now, with its own id")
    _add_target(once)
    once.add_argument("name", help="the schedule's name")
    once.set_defaults(run=run_once)


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "app",
        metavar="MODULE:APP",
        nargs="?",
        default=env_default("app", None),
        help="the App (or its Schedules) whose schedules to use, e.g. tasks.schedules:app "
        "(env LEVERET_APP)",
    )


def load_schedules(spec: str | None) -> Schedules:
    """``module:attribute`` naming a ``Schedules``, or an ``App`` whose ``Schedules``
    the module holds."""
    if not spec:
        raise ConfigError("give the app as MODULE:APP (e.g. tasks.schedules:app) or LEVERET_APP")
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from None
    target = getattr(module, attr or "app", None)
    if isinstance(target, Schedules):
        return target
    if not isinstance(target, App):
        raise ConfigError(f"{spec!r} is neither an App nor Schedules ({type(target).__name__})")
    found = schedules_of(module, target)
    if len(found) != 1:
        why = "no Schedules" if not found else f"{len(found)} Schedules objects"
        raise ConfigError(
            f"module {module_name!r} holds {why} for that app: declare "
            "`schedules = Schedules(app)` there, or name it as MODULE:SCHEDULES"
        )
    return found[0]


def run_scheduler(args: argparse.Namespace) -> int:
    logs.configure(args.log_level, args.log_format)
    schedules = load_schedules(args.app)
    if not len(schedules):
        raise ConfigError(f"{args.app!r} declares no schedules: nothing to fire")
    sentry_on = sentry_setup.setup(args.sentry_dsn)
    if args.sentry_crons and not sentry_on:
        raise ConfigError("--sentry-crons needs Sentry: give --sentry-dsn (or LEVERET_SENTRY_DSN)")
    scheduler = Scheduler(
        schedules, queue_type=args.queue_type, sentry_crons=bool(args.sentry_crons)
    )
    health = None
    if args.health_port:
        health = HealthServer(
            scheduler_routes(scheduler), host=args.health_host, port=args.health_port
        )
    asyncio.run(_serve(scheduler, health))
    return 0


def scheduler_routes(scheduler: Scheduler) -> dict[str, Route]:
    """A standby is as ready as the leader: it is what takes over."""

    async def livez() -> Response:
        return 200, TEXT, b"ok\n"

    async def readyz() -> Response:
        if scheduler.connected:
            role = "leader" if scheduler.is_leader else "standby"
            return 200, TEXT, f"ready ({role})\n".encode()
        return 503, TEXT, b"not ready: not connected to RabbitMQ\n"

    async def metrics() -> Response:
        from leveret.ops.metrics import CONTENT_TYPE

        return 200, CONTENT_TYPE, scheduler.metrics.render()

    return {"/livez": livez, "/readyz": readyz, "/metrics": metrics}


async def _serve(scheduler: Scheduler, health: HealthServer | None) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, scheduler.request_stop)
    health = await start_or_warn(health)
    try:
        await scheduler.run()
    finally:
        if health is not None:
            await health.close()
        await scheduler.app.close()
    log.info("scheduler %s stopped", scheduler.identity)


def run_list(args: argparse.Namespace) -> int:
    schedules = load_schedules(args.app)
    status = asyncio.run(_status(schedules))
    now = datetime.now(UTC)
    table = Table(title=None, show_edge=False)
    for column in ("schedule", "task", "when", "missed", "last fired slot", "next"):
        table.add_column(column)
    for row in overview(schedules, status, now):
        table.add_row(
            row.name,
            row.task,
            row.when,
            row.missed,
            row.last.isoformat() if row.last else "-",
            row.next.isoformat(),
        )
    out.print(table)
    if status.leader:
        age = (now - status.written_at).total_seconds() if status.written_at else float("nan")
        since = status.leader_since.isoformat() if status.leader_since else "?"
        out.print(
            f"leader: {status.leader} (since {since}, last heard {age:.0f} s ago); "
            f"replicas: {status.replicas}",
            highlight=False,
        )
    else:
        out.print(f"leader: none has written a status yet; replicas: {status.replicas}")
    return 0


async def _status(schedules: Schedules) -> Status:
    try:
        return await read_status(schedules)
    finally:
        await schedules.app.close()


def run_once(args: argparse.Namespace) -> int:
    schedules = load_schedules(args.app)
    schedules[args.name]  # unknown names fail before connecting

    async def send() -> str:
        try:
            return await run_now(schedules, args.name)
        finally:
            await schedules.app.close()

    out.print(asyncio.run(send()), highlight=False)
    return 0
