"""``leveret dashboard MODULE:APP``: serve the operators' web dashboard.

The dashboard needs the optional extra: ``pip install 'leveret[dashboard]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from leveret.app import App
from leveret.cli.common import add_app_argument, env_default, load_app
from leveret.errors import ConfigError
from leveret.scheduler import Schedules
from leveret.scheduler.schedules import schedules_of


def register(commands: Any) -> None:
    p: argparse.ArgumentParser = commands.add_parser(
        "dashboard",
        help="serve the web dashboard: queues, dead letters, replay",
        description="Serve the web dashboard of an app. Reading needs no credentials; "
        "replay and purge need --token or --user/--password (LEVERET_DASHBOARD_TOKEN, "
        "LEVERET_DASHBOARD_USER, LEVERET_DASHBOARD_PASSWORD; prefer the variables: "
        "flags show in the process list).",
    )
    add_app_argument(p)
    p.add_argument("--host", default=env_default("dashboard_host", "127.0.0.1"))
    p.add_argument("--port", type=int, default=env_default("dashboard_port", 8080))
    p.add_argument("--token", default=None, help="bearer token for changes (16+ characters)")
    p.add_argument("--user", default=None, help="basic-auth user for changes")
    p.add_argument("--password", default=None, help="basic-auth password for changes")
    p.add_argument(
        "--read-only",
        action="store_true",
        default=env_default("dashboard_read_only", False),
        help="refuse every change, whoever asks",
    )
    p.add_argument("--management-url", default=None, help="RabbitMQ management API URL")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from leveret.dashboard import DashboardSettings, create_app
    except ImportError as exc:
        raise ConfigError(
            f"the dashboard needs its optional dependencies ({exc.name} is missing): "
            "pip install 'leveret[dashboard]'"
        ) from None
    given = {
        "host": args.host,
        "port": args.port,
        "token": args.token,
        "user": args.user,
        "password": args.password,
        "read_only": args.read_only or None,
        "management_url": args.management_url,
    }
    settings = DashboardSettings(**{k: v for k, v in given.items() if v is not None})
    app = load_app(args.app)
    schedules = _schedules(args.app, app)
    logging.getLogger("leveret.dashboard").info(
        "dashboard of %s on http://%s:%d/ (%s)",
        args.app,
        settings.host,
        settings.port,
        "read-only"
        if settings.read_only
        else "changes need credentials"
        if settings.can_change
        else "changes off: no credentials configured",
    )
    config = uvicorn.Config(
        create_app(app, settings, schedules),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
    )
    _server_class()(config).run()
    return 0


def _schedules(spec: str, app: App) -> Schedules | None:
    """The app's ``Schedules``, when the module that holds the app declares one."""
    found = schedules_of(sys.modules[spec.partition(":")[0]], app)
    if len(found) > 1:
        raise ConfigError(
            f"{spec!r}: its module holds {len(found)} Schedules objects for the app; "
            "keep one, so the Schedules page shows them all"
        )
    return found[0] if found else None


def _server_class() -> type[Any]:
    import uvicorn

    class CleanExitServer(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT once it has stopped gracefully, so the
        process dies of the signal; a stop that was asked for is a clean exit here
        (exit 0), as for the worker."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                captured = getattr(self, "_captured_signals", None)
                if isinstance(captured, list):
                    captured.clear()

    return CleanExitServer
