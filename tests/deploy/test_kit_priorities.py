"""The Kubernetes kit's queue settings honour the demo's priorities on RabbitMQ 4.

The kit runs quorum queues (replicated); this runs the demo's task with exactly the
kit's LEVERET_* queue settings against a RabbitMQ 4 node, sending its lowest-priority
tasks first and its highest last, and checks that the high ones run first.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from leveret import App, Settings, Worker
from leveret.amqp import probe
from leveret.ops.discovery import port_open
from tasks.contracts import Receipt, send_receipt
from tasks.demo import receipt
from tests.deploy.support import config_map, overlay
from tests.support.amqp import delete_namespace
from tests.support.waiting import wait_for
from tests.support.workers import running

RABBITMQ4_URL = os.environ.get("RABBITMQ4_URL", "amqp://guest:guest@127.0.0.1:5682/")
QUEUE_SETTINGS = ("LEVERET_QUEUE_TYPE", "LEVERET_DELAY_QUEUE_TYPE", "LEVERET_PRIORITY_BANDS")


@pytest.fixture
async def kit_app(namespace: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    host_port = RABBITMQ4_URL.split("@")[-1].split("/")[0]
    host, _, port = host_port.partition(":")
    if not port_open(host, int(port or 5672)):
        reason = f"no RabbitMQ 4 at {RABBITMQ4_URL}: start one with `sudo .ci/rabbitmq4.sh up`"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    kit = config_map(overlay("prod"), "leveret-worker-config")
    for key in QUEUE_SETTINGS:  # read from the environment, as in the worker's pod
        monkeypatch.setenv(key, kit[key])
    settings = Settings(url=RABBITMQ4_URL, namespace=namespace)
    app = App(settings)
    version = probe.server_version(await app.connector.get())
    assert version.startswith("4."), f"{RABBITMQ4_URL} runs RabbitMQ {version}, not 4.x"
    yield app
    await app.close()
    queues = {band for spec in app.queues.values() for band in spec.bands}
    await delete_namespace(RABBITMQ4_URL, settings, queues)


async def test_the_kits_queues_run_the_demos_high_priorities_first(kit_app: App) -> None:
    app = kit_app
    assert app.queue_spec(send_receipt.queue).type == "quorum"
    order: list[int] = []

    @app.handle(send_receipt)
    async def handle(payload: Receipt) -> None:
        order.append(payload.order_id)

    await app.declare()  # a queue that ignored priorities would warn here, and fail
    await app.send_many(send_receipt, [receipt(i, 0) for i in range(100)], priority=0)
    await app.send_many(send_receipt, [receipt(1000 + i, 9) for i in range(100)], priority=9)
    async with running(Worker(app, concurrency=1)):
        await wait_for(lambda: len(order) == 200)
    assert sum(n >= 1000 for n in order[:100]) >= 95, order[:110]
