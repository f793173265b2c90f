"""What every command shares: loading the app, flags that are also env variables."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, NoReturn

from rich.console import Console

from leveret.app import App
from leveret.errors import ConfigError

console = Console(stderr=True)
out = Console()


def env_default(name: str, default: Any) -> Any:
    """The value of LEVERET_<NAME> if set, else ``default``: every flag is an env var too."""
    value = os.environ.get(f"LEVERET_{name.upper().replace('-', '_')}")
    if value is None:
        return default
    if isinstance(default, bool):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    return value


def add_app_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "app",
        metavar="MODULE:APP",
        nargs="?",
        default=env_default("app", None),
        help="where the App object lives, e.g. tasks.handlers:app (env LEVERET_APP)",
    )


def add_health_arguments(parser: argparse.ArgumentParser) -> None:
    """``--health-port`` and ``--health-host``: where /livez, /readyz and /metrics listen."""
    parser.add_argument(
        "--health-port",
        type=int,
        default=env_default("health_port", 8000),
        help="port of /livez, /readyz and /metrics (env LEVERET_HEALTH_PORT, default 8000; "
        "0 disables them)",
    )
    parser.add_argument(
        "--health-host",
        default=env_default("health_host", "0.0.0.0"),
        help="address the health endpoints listen on (default 0.0.0.0)",
    )


def add_log_format_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "text"),
        default=env_default("log_format", "auto"),
        help="json, text, or auto: text on a terminal, json otherwise (default auto)",
    )


def load_app(spec: str | None) -> App:
    """Import ``module:attribute`` and check that it is an App."""
    if not spec:
        raise ConfigError("give the app as MODULE:APP (e.g. tasks.handlers:app) or LEVERET_APP")
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from None
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise ConfigError(f"{spec!r} is not an App (found {type(app).__name__})")
    return app


def error(message: str) -> None:
    """Print an error as one line, however narrow the terminal: scripts grep for it."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    error(message)
    raise SystemExit(code)
