"""The dashboard's queues page read through the RabbitMQ management API on a real node:
ready, unacknowledged and consumer counts as a real consumer leaves them, the age of
the oldest message, the rows the API cannot fill saying why, and the fall back to AMQP
when the API refuses, stops, or comes back.

The API refreshes its figures every few seconds (``collect_statistics_interval``):
every check waits for them, none sleeps and looks.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import httpx
import pytest

from leveret import App
from leveret.ops.discovery import free_port
from tests.apps import queues_app
from tests.support.amqp import delete_namespace
from tests.support.dashboard import serving
from tests.support.management import WithManagement
from tests.support.models import Job
from tests.support.waiting import wait_for

APP = "tests.apps.queues_app:app"
READY, UNACKED, QUORUM_READY = 7, 3, 4


@pytest.fixture
async def app(management: WithManagement, namespace: str) -> AsyncIterator[App]:
    """tests.apps.queues_app on the node with the API, under the test's namespace,
    declared; deleted afterwards."""
    made = App(url=management.amqp_url, namespace=namespace, app_id=queues_app.app.app_id)
    for spec in queues_app.app.queues.values():
        made.queue(spec.name, type=spec.type)
    for task in queues_app.app.contracts.values():
        made.add(task)
    await made.declare()
    yield made
    await made.close()
    await delete_namespace(management.amqp_url, made.settings, made.queues)


@contextlib.asynccontextmanager
async def holding(url: str, queue: str, prefetch: int) -> AsyncIterator[None]:
    """A consumer that takes ``prefetch`` messages of ``queue`` and never acks them;
    they go back to the queue when it leaves."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        source = await channel.get_queue(queue, ensure=False)
        await source.consume(_keep)
        yield
    finally:
        await connection.close()


async def _keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """Neither ack nor reject: the message stays unacknowledged."""


def moved(url: str, *, password: str | None = None, port: int | None = None) -> str:
    """The management API's URL with another password, or through a local port."""
    parts = urlsplit(url)
    user = parts.username or "guest"
    secret = password if password is not None else parts.password or "guest"
    where = f"127.0.0.1:{port}" if port is not None else parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{secret}@{where}"))


async def report(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/queues?format=json")
    r.raise_for_status()
    found: dict[str, Any] = r.json()["report"]
    return found


def rows(found: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in found["queues"]}


def cells(page: str, queue: str) -> dict[str, str]:
    """The figures of one queue's row on the HTML page, by field."""
    row = re.search(rf'<tr data-queue="{re.escape(queue)}">(.*?)</tr>', page, re.S)
    assert row is not None, f"no row for {queue} on the page"
    return dict(re.findall(r'data-field="(\w+)"[^>]*>([^<]*)<', row.group(1)))


async def test_the_page_shows_what_a_consumer_holds_and_how_old_the_next_message_is(
    app: App, management: WithManagement, namespace: str
) -> None:
    names = app.sender.names
    orders, ledger = names.work_queue("orders"), names.work_queue("ledger")
    first_sent = time.time()
    await app.send_many(queues_app.order, [Job(n=n) for n in range(READY + UNACKED)])
    last_sent = time.time()
    await app.send_many(queues_app.entry, [Job(n=n) for n in range(QUORUM_READY)])
    await app.send(queues_app.order, Job(n=-1), delay=3600)  # parked in a delay level

    args = ("--management-url", management.management_url)
    async with (
        holding(management.amqp_url, orders, UNACKED),
        serving(management.amqp_url, namespace, APP, *args) as served,
        served.client() as client,
    ):
        latest: dict[str, Any] = {}

        async def settled() -> bool:
            latest.update(await report(client))
            found = rows(latest)
            work, quorum = found.get(orders, {}), found.get(ledger, {})
            return (
                (work.get("ready"), work.get("unacked"), work.get("consumers"))
                == (READY, UNACKED, 1)
                and (quorum.get("ready"), quorum.get("unacked")) == (QUORUM_READY, 0)
                and latest["delayed"] == 1
            )

        await wait_for(settled, every=0.5, what=lambda: f"the API's figures: {latest}")
        assert latest["source"] == "management"
        found = rows(latest)
        work = found[orders]
        # The next message was sent between first_sent and last_sent; its timestamp
        # is whole seconds, rounded down, so it can only look older, by under 1 s.
        assert work["oldest_age"] >= latest["taken_at"] - last_sent
        assert work["oldest_age"] <= latest["taken_at"] - first_sent + 1
        assert work["rate_in"] is not None
        assert work["rate_in"] >= 0
        assert work["rate_out"] is not None
        assert work["rate_out"] >= 0
        assert work["unknown"] == {}

        assert found[ledger]["oldest_age"] is None
        assert "classic queues only" in found[ledger]["unknown"]["oldest_age"]
        levels = [n for n, row in found.items() if row["role"].startswith("delay level")]
        assert len(levels) == app.settings.delay_levels
        [busy] = [found[n] for n in levels if found[n]["ready"]]
        assert "expiring" in busy["unknown"]["rate_out"]
        assert found[names.unroutable]["role"] == "unroutable"
        assert found[names.dead_queue("orders")]["ready"] == 0
        # An idle queue has no message_stats at all: its rates are zero, not unknown.
        assert (found[names.unroutable]["rate_in"], found[names.unroutable]["rate_out"]) == (
            0.0,
            0.0,
        )

        page = (await client.get("/queues")).text
        assert 'data-source="management"' in page
        assert "guest:guest" not in page
        shown = cells(page, orders)
        assert (shown["ready"], shown["unacked"], shown["consumers"]) == (
            str(READY),
            str(UNACKED),
            "1",
        )
        assert shown["oldest_age"] not in ("-", "-*")
        assert cells(page, ledger)["oldest_age"] == "-*"
        assert "-* under oldest: RabbitMQ gives the age of the oldest message" in page
        assert cells(page, busy["name"])["ready"] == "1"
        assert cells(page, names.unroutable)["ready"] == "0"
        assert cells(page, names.dead_queue("ledger"))["ready"] == "0"


async def test_wrong_credentials_fall_back_to_amqp_and_say_so(
    app: App, management: WithManagement, namespace: str
) -> None:
    await app.send_many(queues_app.order, [Job(n=n) for n in range(READY)])
    user = urlsplit(management.management_url).username or "guest"
    wrong = moved(management.management_url, password="not-the-password")
    async with (
        serving(management.amqp_url, namespace, APP, "--management-url", wrong) as served,
        served.client() as client,
    ):
        found = await report(client)
        assert found["source"] == "amqp"
        assert f"refused user {user!r} (401)" in found["why"]
        assert "LEVERET_DASHBOARD_MANAGEMENT_URL" in found["why"]
        work = rows(found)[app.sender.names.work_queue("orders")]
        assert (work["ready"], work["consumers"], work["unacked"]) == (READY, 0, None)
        page = (await client.get("/queues")).text
        assert 'data-source="amqp"' in page
        assert "not-the-password" not in page


class Forwarder:
    """A TCP port in front of the management API that can stop and start again, as
    the API does when its node restarts or the plugin is disabled."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = free_port()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def test_the_api_stopping_falls_back_and_its_return_is_noticed(
    app: App, management: WithManagement, namespace: str
) -> None:
    api = urlsplit(management.management_url)
    forwarder = Forwarder(api.hostname or "127.0.0.1", api.port or 15672)
    await forwarder.start()
    env = {"LEVERET_DASHBOARD_MANAGEMENT_RETRY_SECONDS": "0.5"}
    url = moved(management.management_url, port=forwarder.port)
    try:
        async with (
            serving(
                management.amqp_url, namespace, APP, "--management-url", url, env=env
            ) as served,
            served.client() as client,
        ):
            latest: dict[str, Any] = {}

            def source_is(wanted: str) -> Any:
                async def check() -> bool:
                    latest.update(await report(client))
                    return bool(latest["source"] == wanted)

                return check

            await wait_for(source_is("management"), every=0.2, what=lambda: str(latest))
            await forwarder.stop()
            await wait_for(source_is("amqp"), every=0.2, what=lambda: str(latest))
            assert f"nothing answers at http://127.0.0.1:{forwarder.port}" in latest["why"]
            assert "tried again every 0.5 s" in latest["why"]
            assert rows(latest)[app.sender.names.work_queue("orders")]["ready"] == 0
            await forwarder.start()
            await wait_for(source_is("management"), every=0.2, what=lambda: str(latest))
    finally:
        await forwarder.stop()
