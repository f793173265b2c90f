"""The pytest plugin (registered by entry point: installing leveret is enough).

Fixtures, all testing the app your own ``leveret_app`` fixture returns:

- ``leveret_kit``: an in-memory ``Kit``;
- ``leveret_broker_kit``: a ``BrokerKit`` on a real RabbitMQ, found as the engine
  finds one (``RABBITMQ_URL``, localhost:5672, a local ``rabbitmq-server`` started on
  free ports, a container where Docker runs); with none the test is skipped with how
  to get one, or fails under ``CI=true``;
- ``leveret_harness``: parametrised over both, so one test body runs in memory and
  on RabbitMQ (ids ``memory`` and ``rabbitmq``); ``-m "not rabbitmq"`` keeps it in
  memory.

Async fixtures: run the tests with pytest-asyncio (``asyncio_mode = "auto"``) or
mark them ``@pytest.mark.asyncio``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from leveret.app import App
from leveret.errors import BrokerUnavailable
from leveret.ops.discovery import Found, find_broker
from leveret.testing.harness import Harness
from leveret.testing.kit import Kit
from leveret.testing.real import BrokerKit

try:
    import pytest_asyncio

    _async_fixture = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - without pytest-asyncio the async fixtures cannot run
    _async_fixture = pytest.fixture  # type: ignore[assignment]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "rabbitmq: the test runs against a real RabbitMQ")


@pytest.fixture
def leveret_app() -> App:
    """The app under test: override this fixture in your conftest.py."""
    raise pytest.UsageError(
        "the leveret fixtures test the app your `leveret_app` fixture returns: add to "
        "conftest.py\n\n    @pytest.fixture\n    def leveret_app():\n        from myservice "
        "import app\n        return app\n"
    )


@pytest.fixture(scope="session")
def leveret_broker_url() -> Iterator[str]:
    """The URL of the RabbitMQ the ``leveret_broker_kit`` fixture uses."""
    try:
        found: Found = find_broker()
    except BrokerUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip(str(exc))
    yield found.url
    found.close()


@_async_fixture
async def leveret_kit(leveret_app: App) -> AsyncIterator[Kit]:
    """The app bound to an in-memory RabbitMQ with a virtual clock."""
    async with Kit(leveret_app) as kit:
        yield kit


@_async_fixture
async def leveret_broker_kit(leveret_app: App, leveret_broker_url: str) -> AsyncIterator[BrokerKit]:
    """The app bound to a throwaway namespace of a real RabbitMQ, deleted afterwards."""
    async with BrokerKit(leveret_app, leveret_broker_url) as kit:
        yield kit


@_async_fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("rabbitmq", id="rabbitmq", marks=pytest.mark.rabbitmq),
    ]
)
async def leveret_harness(
    request: pytest.FixtureRequest, leveret_app: App
) -> AsyncIterator[Harness]:
    """The same test on both: once in memory, once on a real RabbitMQ."""
    harness: Harness
    if request.param == "memory":
        harness = await Kit(leveret_app).start()
    else:
        url = request.getfixturevalue("leveret_broker_url")
        harness = await BrokerKit(leveret_app, url).start()
    try:
        yield harness
    finally:
        await harness.close()
