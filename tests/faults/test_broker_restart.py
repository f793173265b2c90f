"""A broker restart under a running worker and a steady producer loses nothing.

The node is our own (LocalNode): stopped and started again with its data, on the
same port. The worker is not restarted; it reconnects and consumes again by itself.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from leveret import App, NotConfirmed
from leveret.ops.discovery import LocalNode
from tests.apps.ops_app import slow
from tests.support.models import Sleep
from tests.support.ops import events, ledger, metric, scrape, start_ops_worker, status, wait_status
from tests.support.waiting import wait_for
from tests.support.workers import Spawn

pytestmark = [
    pytest.mark.slow,
    # LocalNode.start leaves its log file handle to the garbage collector.
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in.*stdout.log:pytest.PytestUnraisableExceptionWarning"
    ),
]


@pytest.fixture
def private_node() -> Iterator[LocalNode]:
    """A node this test alone uses, so that it may stop it: the fault suite's ``node``
    is shared by the whole session."""
    node = LocalNode().start()
    yield node
    node.destroy()


async def test_worker_and_producer_ride_out_a_broker_restart(
    private_node: LocalNode,
    namespace: str,
    spawn_worker: Spawn,
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger"
    worker, output, port = await start_ops_worker(
        spawn_worker, path, "--concurrency", "8", env={"LEVERET_URL": private_node.url}
    )

    producer = App(url=private_node.url, namespace=namespace, publish_deadline=60.0)
    producer.add(slow)
    impatient = App(url=private_node.url, namespace=namespace, publish_deadline=2.0)
    impatient.add(slow)
    confirmed: list[str] = []
    failed: list[BaseException] = []
    readiness: list[int | None] = []
    stop = asyncio.Event()

    async def produce() -> None:
        while not stop.is_set():
            try:
                confirmed.append(await producer.send(slow, Sleep(seconds=0.01)))
            except NotConfirmed as exc:
                failed.append(exc)
            await asyncio.sleep(0.02)

    async def watch_readiness() -> None:
        while not stop.is_set():
            code = await status(port, "/readyz")
            if not readiness or readiness[-1] != code:
                readiness.append(code)
            await asyncio.sleep(0.1)

    try:
        await impatient.send(slow, Sleep(seconds=0))  # connected and declared
        tasks = [asyncio.create_task(produce()), asyncio.create_task(watch_readiness())]
        await wait_for(lambda: events(tmp_path / "ledger")["done"] >= 20)

        await asyncio.to_thread(private_node.stop)
        started = time.monotonic()
        with pytest.raises(NotConfirmed):
            await impatient.send(slow, Sleep(seconds=0))
        assert time.monotonic() - started < 15, "a send gives up at its deadline"
        await asyncio.to_thread(private_node.start)

        await wait_status(port, "/readyz", 200, within=60)
        count = len(confirmed)
        await wait_for(lambda: len(confirmed) >= count + 20, timeout=30)
        stop.set()
        await asyncio.gather(*tasks)

        def processed() -> set[str]:
            return {task_id for event, task_id, _ in ledger(path) if event == "done"}

        await wait_for(lambda: set(confirmed) <= processed(), timeout=60)
    finally:
        stop.set()
        await producer.close()
        await impatient.close()

    assert worker.poll() is None, "the worker needed no restart:\n" + output.text
    assert readiness[0] == 200
    assert 503 in readiness, f"/readyz went unready during the outage: {readiness}"
    assert readiness[-1] == 200
    assert not failed, f"sends raised although the deadline outlasted the outage: {failed}"
    assert any("reconnect" in line or "connecting to" in line for line in output.lines)
    assert "guest:guest" not in output.text
    assert metric(await scrape(port), "leveret_reconnects_total") >= 1
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 30) == 0
