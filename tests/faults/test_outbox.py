"""The outbox relay under faults: killed mid-batch over and over, and a broker that
goes away mid-drain. Counted against the table and the queue: every committed row
reaches the queue (0 lost); duplicates, from batches published but not yet marked
when the relay died, are counted and reported.

Fast size in ``make test``; ``make test-faults`` (LEVERET_FAULTS_FULL=1) runs the
full one: 20,000 rows and 20 kills, a 30 s outage.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from leveret import App
from leveret.amqp.topology import Names
from leveret.ops.discovery import LocalNode, free_port
from leveret.outbox import Outbox
from tests.apps.outbox_app import QUEUE, job
from tests.faults.conftest import need_rabbitmq_server
from tests.faults.scenario import FULL, size, span
from tests.support.amqp import delete_namespace, ids_in
from tests.support.models import Job
from tests.support.ops import status, wait_status
from tests.support.outbox import insert_rows, rows, start_relay, unsent
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900 if FULL else 300),
    # LocalNode.start leaves its log file handle to the garbage collector.
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in.*stdout.log:pytest.PytestUnraisableExceptionWarning"
    ),
]


async def fill_outbox(app: App, dsn: str, table: str, count: int) -> list[str]:
    outbox = Outbox(app, table=table)
    made = [outbox.row(job, Job(n=n)) for n in range(count)]
    for start in range(0, count, 5000):
        await insert_rows(dsn, table, made[start : start + 5000])
    return [str(r["task_id"]) for r in made]


def report(name: str, committed: list[str], published: list[str], **more: object) -> int:
    """Print the verdict; return how many rows were lost."""
    lost = len(set(committed) - set(published))
    duplicates = len(published) - len(set(published))
    extra = "".join(f", {k} {v}" for k, v in more.items())
    print(f"\n{name}: committed {len(committed)}, lost {lost}, duplicates {duplicates}{extra}")
    return lost


async def test_relay_sigkilled_over_and_over_while_draining_loses_nothing(
    make_app: Callable[..., App],
    postgres_url: str,
    outbox_table: str,
    amqp_url: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    rows_total, kills = size(2000, 20_000), size(5, 20)
    app = make_app()
    app.add(job)
    await app.declare()
    committed = await fill_outbox(app, postgres_url, outbox_table, rows_total)
    log = tmp_path / "relay.log"
    mid_drain = 0
    for _ in range(kills):
        before = await unsent(postgres_url, outbox_table)
        relay = start_relay(
            amqp_url, namespace, postgres_url, outbox_table, "--batch-size", "50",
            "--health-port", "0", log=log,
        )  # fmt: skip
        try:

            async def progressed(before: int = before) -> bool:
                return await unsent(postgres_url, outbox_table) < before or before == 0

            await wait_for(progressed, every=0.01, what=lambda: log.read_text()[-2000:])
        finally:
            relay.kill()
            await asyncio.to_thread(relay.wait, 30)
        if await unsent(postgres_url, outbox_table):
            mid_drain += 1

    relay = start_relay(
        amqp_url, namespace, postgres_url, outbox_table, "--health-port", "0", log=log
    )
    try:

        async def drained() -> bool:
            return await unsent(postgres_url, outbox_table) == 0

        await wait_for(drained, timeout=300, what=lambda: log.read_text()[-2000:])
    finally:
        relay.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(relay.wait, 30) == 0
    published = await ids_in(amqp_url, Names(namespace).work_queue(QUEUE))
    lost = report(
        "relay SIGKILLed while draining", committed, published, kills=kills, mid_drain=mid_drain
    )
    assert lost == 0
    assert mid_drain >= 1, "at least one kill landed while rows were still pending"
    assert set(published) <= set(committed)
    # A duplicate comes only from a batch in flight at a kill: at most one batch each.
    assert len(published) - len(set(published)) <= kills * 50


@pytest.fixture
def private_node() -> Iterator[LocalNode]:
    """A RabbitMQ node this test alone uses, so that it may stop it."""
    need_rabbitmq_server()
    node = LocalNode().start()
    yield node
    node.destroy()


async def test_broker_stopped_mid_drain_rows_wait_and_nothing_is_marked_early(
    private_node: LocalNode,
    postgres_url: str,
    outbox_table: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    outage = span(5.0, 30.0)
    app = App(url=private_node.url, namespace=namespace)
    app.add(job)
    try:
        await app.declare()
        committed = await fill_outbox(app, postgres_url, outbox_table, size(2000, 20_000))
        port = free_port()
        log = tmp_path / "relay.log"
        producing = asyncio.Event()
        producing.set()
        relay = start_relay(
            private_node.url, namespace, postgres_url, outbox_table, "--batch-size", "50",
            "--health-port", str(port), log=log,
        )  # fmt: skip
        try:
            await wait_status(port, "/readyz", 200)

            async def produce() -> None:
                # Rows keep coming before, during and after the outage: the relay is
                # always mid-drain, and rows committed while the broker is gone wait.
                while producing.is_set():
                    committed.extend(await fill_outbox(app, postgres_url, outbox_table, 20))
                    await asyncio.sleep(0.02)

            producer = asyncio.create_task(produce())
            await asyncio.sleep(0.5)
            await asyncio.to_thread(private_node.stop)
            await wait_status(port, "/readyz", 503)
            pending_at_stop = last = await unsent(postgres_url, outbox_table)
            down_until = time.monotonic() + outage
            while time.monotonic() < down_until:
                now = await unsent(postgres_url, outbox_table)
                assert now >= last, "a row was marked sent while the broker was down"
                assert await status(port, "/readyz") == 503
                last = now
                await asyncio.sleep(0.2)
            assert last > pending_at_stop, "rows committed during the outage wait"
            await asyncio.to_thread(private_node.start)
            await wait_status(port, "/readyz", 200, within=120)
            producing.clear()
            await producer

            async def drained() -> bool:
                return await unsent(postgres_url, outbox_table) == 0

            await wait_for(drained, timeout=300, what=lambda: log.read_text()[-2000:])
            relay.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(relay.wait, 30) == 0
        finally:
            producing.clear()
            if relay.poll() is None:
                relay.kill()
                relay.wait()
        published = await ids_in(private_node.url, Names(namespace).work_queue(QUEUE))
        lost = report(
            f"broker stopped {outage:.0f} s mid-drain",
            committed,
            published,
            pending_at_stop=pending_at_stop,
        )
        assert lost == 0
        assert pending_at_stop > 0, "the broker stopped while rows were pending"
        assert set(published) <= set(committed)
        assert all(r["sent_at"] is not None for r in await rows(postgres_url, outbox_table))
    finally:
        await app.close()
        await delete_namespace(private_node.url, app.settings, [QUEUE], best_effort=True)
