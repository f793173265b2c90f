"""``check``: ask a running worker whether it is ready (or alive), as an exec probe.

Exit code 0 if it is, 1 if it is not or does not answer. It asks the worker's own
health endpoint, so it reports what the worker sees (its connection, its consumers)
rather than opening a connection of its own.
"""

from __future__ import annotations

import argparse
import asyncio

from leveret.cli.common import console, env_default, out
from leveret.ops.health import probe


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser(
        "check", help="exit 0 if the worker on this host is ready (or alive, with --live)"
    )
    check.add_argument(
        "--live",
        action="store_true",
        help="check liveness (/livez: the event loop answers) instead of readiness",
    )
    check.add_argument(
        "--port",
        type=int,
        default=env_default("health_port", 8000),
        help="the worker's --health-port (env LEVERET_HEALTH_PORT, default 8000)",
    )
    check.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    check.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for an answer (default 3)"
    )
    check.set_defaults(run=run_check)


def run_check(args: argparse.Namespace) -> int:
    path = "/livez" if args.live else "/readyz"
    if not args.port:
        console.print("error: health endpoints are disabled (port 0); nothing to ask")
        return 1
    try:
        status, body = asyncio.run(probe(args.host, args.port, path, args.timeout))
    except (OSError, TimeoutError) as exc:
        console.print(
            f"no answer from http://{args.host}:{args.port}{path} "
            f"({type(exc).__name__}: {exc}); is the worker running with --health-port "
            f"{args.port}?",
            highlight=False,
        )
        return 1
    text = body.decode("utf-8", "replace").strip()
    (out if status == 200 else console).print(text, highlight=False)
    return 0 if status == 200 else 1
