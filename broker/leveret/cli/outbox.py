"""``outbox``: create the outbox table, and relay its committed rows to RabbitMQ."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

from leveret.cli.common import (
    add_app_argument,
    add_health_arguments,
    add_log_format_argument,
    env_default,
    load_app,
    out,
)
from leveret.errors import ConfigError
from leveret.ops import logs
from leveret.ops.health import TEXT, HealthServer, Response, Route, start_or_warn

if TYPE_CHECKING:
    from leveret.outbox import Relay, RelayMetrics

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    outbox = commands.add_parser(
        "outbox", help="the transactional outbox on PostgreSQL: migrate, relay"
    )
    verbs = outbox.add_subparsers(dest="verb", required=True, metavar="VERB")

    migrate = verbs.add_parser("migrate", help="create the outbox table (safe to run again)")
    _common(migrate)
    migrate.add_argument(
        "--print",
        action="store_true",
        help="print the SQL instead of running it (for psql or a migration tool)",
    )
    migrate.set_defaults(run=run_migrate)

    relay = verbs.add_parser(
        "relay", help="publish committed outbox rows with confirms, then mark them sent"
    )
    add_app_argument(relay)
    _common(relay)
    relay.add_argument(
        "--batch-size",
        type=int,
        default=env_default("outbox_batch_size", 500),
        help="rows claimed and published per transaction (env LEVERET_OUTBOX_BATCH_SIZE, "
        "default 500)",
    )
    relay.add_argument(
        "--poll-interval",
        type=float,
        default=env_default("outbox_poll_interval", 0.5),
        help="seconds between looks at an empty outbox: the most a row waits once "
        "committed (env LEVERET_OUTBOX_POLL_INTERVAL, default 0.5)",
    )
    relay.add_argument(
        "--retention",
        type=float,
        default=env_default("outbox_retention", 24.0),
        help="hours sent rows are kept before they are deleted "
        "(env LEVERET_OUTBOX_RETENTION, default 24; 0 deletes them at the next cleanup)",
    )
    add_health_arguments(relay)
    add_log_format_argument(relay)
    relay.set_defaults(run=run_relay)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        default=env_default("outbox_dsn", None),
        help="PostgreSQL connection string, e.g. postgresql://user@host/db "
        "(env LEVERET_OUTBOX_DSN)",
    )
    parser.add_argument(
        "--table",
        default=env_default("outbox_table", "leveret_outbox"),
        help="the outbox table, TABLE or SCHEMA.TABLE (env LEVERET_OUTBOX_TABLE, "
        "default leveret_outbox)",
    )


def _dsn(args: argparse.Namespace) -> str:
    if not args.dsn:
        raise ConfigError(
            "give the PostgreSQL database as --dsn postgresql://user@host/db or LEVERET_OUTBOX_DSN"
        )
    return str(args.dsn)


def run_migrate(args: argparse.Namespace) -> int:
    from leveret.outbox.schema import Table

    table = Table.parse(args.table)
    if args.print:
        sys.stdout.write(table.migration())
        return 0
    from leveret.outbox.schema import migrate

    migrate(_dsn(args), args.table)
    out.print(f"outbox table {table.display} is ready", highlight=False)
    return 0


def run_relay(args: argparse.Namespace) -> int:
    from leveret.outbox import Relay, RelayMetrics

    if args.retention < 0:
        raise ConfigError(f"--retention must be >= 0 hours, got {args.retention}")
    logs.configure(args.log_level, args.log_format)
    app = load_app(args.app)
    metrics = RelayMetrics()
    relay = Relay(
        app,
        _dsn(args),
        table=args.table,
        batch_size=args.batch_size,
        poll_interval=args.poll_interval,
        retention=timedelta(hours=args.retention),
        metrics=metrics,
    )
    health = None
    if args.health_port:
        health = HealthServer(
            relay_routes(relay, metrics), host=args.health_host, port=args.health_port
        )
    asyncio.run(_serve(relay, health))
    return 0


def relay_routes(relay: Relay, metrics: RelayMetrics) -> dict[str, Route]:
    """``/livez``, ``/readyz`` (PostgreSQL and RabbitMQ reachable) and ``/metrics``."""

    async def livez() -> Response:
        return 200, TEXT, b"ok\n"

    async def readyz() -> Response:
        if relay.ready:
            return 200, TEXT, b"ready\n"
        return 503, TEXT, f"not ready: {relay.reason}\n".encode()

    async def render() -> Response:
        from leveret.ops.metrics import CONTENT_TYPE

        metrics.ready.set(1 if relay.ready else 0)
        return 200, CONTENT_TYPE, metrics.render()

    return {"/livez": livez, "/readyz": readyz, "/metrics": render}


async def _serve(relay: Relay, health: HealthServer | None) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, relay.request_stop)
    health = await start_or_warn(health)
    try:
        await relay.run()
    finally:
        if health is not None:
            await health.close()
        await relay.app.close()
