"""Shared fixtures: a real RabbitMQ, and apps under a namespace unique to each test."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from leveret import App, Settings
from leveret.amqp.topology import Topology
from leveret.ops.discovery import Found, find_broker
from tests.helpers import Output

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def broker_found() -> Iterator[Found]:
    found = find_broker()
    yield found
    found.close()


@pytest.fixture(scope="session")
def amqp_url(broker_found: Found) -> str:
    return broker_found.url


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses: every exchange and queue of the test lives under it."""
    return f"t{uuid.uuid4().hex[:10]}"


async def delete_namespace(url: str, settings: Settings, queues: list[str]) -> None:
    """Remove everything a test declared under its namespace."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await (await connection.channel()).get_underlay_channel()
        await Topology(settings).delete(channel, queues)


@pytest.fixture
async def make_app(amqp_url: str, namespace: str) -> AsyncIterator[Callable[..., App]]:
    """Build Apps on the test's namespace; all they declared is deleted afterwards."""
    apps: list[App] = []

    def make(**overrides: Any) -> App:
        overrides.setdefault("url", amqp_url)
        overrides.setdefault("namespace", namespace)
        app = App(**overrides)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.close()
    if apps:
        queues = sorted({q for app in apps for q in app.queues})
        await delete_namespace(amqp_url, apps[0].settings, queues)


@pytest.fixture
def spawn_worker(amqp_url: str, namespace: str) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``leveret worker`` processes on the test's namespace; killed afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(app: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        full_env = {
            **os.environ,
            "LEVERET_URL": amqp_url,
            "LEVERET_NAMESPACE": namespace,
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "leveret", "worker", app, *args],
            env=full_env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        Output(proc)  # drain its output, or a chatty worker blocks on a full pipe
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        Output(proc).join()
        if proc.stdout is not None:
            proc.stdout.close()
