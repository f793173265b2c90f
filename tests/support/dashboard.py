"""For the dashboard's tests: ``leveret dashboard`` started as a process and ready, an
HTTP client for it, and the Chromium the browser tests drive."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from leveret.ops.discovery import free_port
from tests.support import ROOT, missing_service
from tests.support.processes import Output, leveret_command, leveret_env
from tests.support.waiting import wait_for

TOKEN = "a-test-token-of-enough-length"
USER, PASSWORD = "oncall", "correct horse battery"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    output: Output
    url: str

    def client(self, **kwargs: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=60, **kwargs)  # type: ignore[arg-type]


def start_dashboard(
    amqp_url: str, namespace: str, app: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``leveret dashboard APP ARGS``, its output on a pipe (read it with ``Output``)."""
    return subprocess.Popen(
        leveret_command("dashboard", app, *args),
        env=leveret_env(amqp_url, namespace, env),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@asynccontextmanager
async def serving(
    amqp_url: str, namespace: str, app: str, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[Served]:
    """``leveret dashboard APP ARGS`` on a free port, once it answers and has grouped
    the dead letters once; stopped afterwards."""
    port = free_port()
    proc = start_dashboard(amqp_url, namespace, app, "--port", str(port), *args, env=env)
    served = Served(proc, Output(proc), f"http://127.0.0.1:{port}")
    try:
        async with served.client() as client:

            async def grouped() -> bool:
                if proc.poll() is not None:
                    raise AssertionError("the dashboard exited:\n" + served.output.text)
                try:
                    r = await client.get("/dead-letters?format=json")
                except httpx.TransportError:
                    return False
                return bool(r.json()["snapshot"]["finished_at"])

            await wait_for(grouped, every=0.1, what=lambda: served.output.text)
        yield served
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        served.output.join()
        assert proc.stdout is not None
        proc.stdout.close()


async def groups(client: httpx.AsyncClient) -> list[dict[str, object]]:
    """The groups of the latest scan, as the JSON API gives them."""
    r = await client.get("/dead-letters?format=json")
    r.raise_for_status()
    found: list[dict[str, object]] = r.json()["snapshot"]["groups"]
    return found


def chromium() -> str:
    """Debian's Chromium; a test without it skips (fails under CI=true) saying how."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if Path(path).exists():
        return path
    missing_service("no Chromium: apt-get install -y chromium chromium-driver (or set CHROMIUM)")
