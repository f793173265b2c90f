"""Where a run happened: recorded beside every result, since figures mean little without it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from typing import Any

from bench.harness import ROOT


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def describe(server: dict[str, Any], broker_how: str) -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "rabbitmq": f"{server.get('product', '?')} {server.get('version', '?')}",
        "broker": broker_how,
        "aio_pika": _version("aio-pika"),
        "aiormq": _version("aiormq"),
        "pamqp": _version("pamqp"),
        "pydantic": _version("pydantic"),
        "pydantic_core": _version("pydantic-core"),
        "uvloop": _version("uvloop"),
        "commit": _commit(),
    }
