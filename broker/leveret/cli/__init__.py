"""The ``leveret`` command line: one subcommand per module in this package."""

from __future__ import annotations

import argparse
import logging
import platform
import sys

from leveret._version import __version__
from leveret.amqp import AMQPError
from leveret.amqp.connection import CONNECTION_ERRORS
from leveret.cli import check, dashboard, dlq, doctor, outbox, scheduler, tasks, worker
from leveret.cli.common import error
from leveret.errors import LeveretError

COMMANDS = (worker, tasks, dlq, check, doctor, outbox, scheduler, dashboard)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="leveret",
        description="Typed background tasks on RabbitMQ. Every flag is also an environment "
        "variable: --concurrency is LEVERET_CONCURRENCY.",
    )
    root.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    root.add_argument(
        "--version",
        action="version",
        version=f"leveret {__version__} "
        f"({platform.python_implementation()} {platform.python_version()})",
        help="print the version of leveret and of Python, then exit",
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        code: int = args.run(args)
    except LeveretError as exc:
        # Any of ours, from any command: one line saying what to do, exit 2 (usage).
        error(str(exc))
        return 2
    except CONNECTION_ERRORS as exc:
        error(
            f"lost the connection to RabbitMQ ({type(exc).__name__}: {exc}); "
            "check the broker and run the command again"
        )
        return 1
    except AMQPError as exc:
        error(f"RabbitMQ refused the operation ({type(exc).__name__}: {exc})")
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
