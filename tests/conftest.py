"""Shared fixtures: a real RabbitMQ, and apps under a namespace unique to each test.

Each fixture name means one thing in the whole suite; the helpers behind them live
in tests/support/.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from leveret import App
from leveret.ops.discovery import Found, find_broker
from tests.support import missing_service
from tests.support.amqp import delete_namespace, fresh_namespace
from tests.support.management import HOW_TO_GET_ONE as MANAGEMENT_HOW_TO
from tests.support.management import WithManagement, find_management
from tests.support.postgres import HOW_TO_GET_ONE, create_outbox, drop_schema, find_postgres
from tests.support.workers import Spawn, start_worker, stop


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
    return fresh_namespace()


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
        queues = {b for app in apps for spec in app.queues.values() for b in spec.bands}
        await delete_namespace(amqp_url, apps[0].settings, queues)


@pytest.fixture
def spawn_worker(amqp_url: str, namespace: str) -> Iterator[Spawn]:
    """Start ``leveret worker`` processes on the test's namespace; killed afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(app: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        own = {"LEVERET_URL": amqp_url, "LEVERET_NAMESPACE": namespace, **(env or {})}
        proc = start_worker(app, *args, env=own)
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        stop(proc)


@pytest.fixture(scope="session")
def leveret_broker_url(amqp_url: str) -> str:
    """The testing kit's real-broker fixtures (the leveret pytest plugin) use this
    suite's broker."""
    return amqp_url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL to create schemas in; skips without one (fails under CI=true)."""
    found = find_postgres()
    if found is None:
        missing_service(HOW_TO_GET_ONE)
    yield found.url
    found.close()


@pytest.fixture(scope="module")
def management(amqp_url: str) -> Iterator[WithManagement]:
    """A RabbitMQ with the management API (the suite's, or a node of the module's own);
    skips without one (fails under CI=true)."""
    found = find_management(amqp_url)
    if found is None:
        missing_service(MANAGEMENT_HOW_TO)
    yield found
    found.close()


@pytest.fixture
def outbox_table(postgres_url: str) -> Iterator[str]:
    """An outbox table in a schema of the test's own (``schema.leveret_outbox``),
    dropped with its schema afterwards."""
    table = create_outbox(postgres_url)
    yield table
    drop_schema(postgres_url, table.partition(".")[0])
