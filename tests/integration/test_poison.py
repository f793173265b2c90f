"""A task that kills its worker every time is stopped by the delivery limit.

On a quorum queue RabbitMQ counts the deliveries; on a classic one the worker does
(a redelivered message is put back as a copy that carries its count).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from leveret import App, Task
from leveret.amqp.topology import Names
from tests.apps.poison import Dose, classic_dose, dose
from tests.apps.poison import app as poison_app
from tests.support.processes import Output
from tests.support.waiting import wait_for

KINDS = pytest.mark.parametrize("task", [dose, classic_dose], ids=["quorum", "classic"])


def same_queues(app: App) -> None:
    """The worker's queues, so that the test declares (and deletes) all of them."""
    for spec in poison_app.queues.values():
        app.queue(spec.name, type=spec.type, delivery_limit=spec.delivery_limit)
    app.add(dose)
    app.add(classic_dose)


@KINDS
async def test_crash_loop_ends_in_dead_letters_after_the_limit(  # type: ignore[no-untyped-def]
    make_app, spawn_worker, tmp_path: Path, task: Task[Dose]
) -> None:
    ledger = tmp_path / "ledger"
    ledger.touch()
    app: App = make_app()
    same_queues(app)
    await app.declare()
    lethal = await app.send(task, Dose(lethal=True))

    env = {"TEST_LEDGER": str(ledger)}
    connection = await app.connector.get()
    channel = await connection.channel()
    names = Names(app.settings.namespace)
    dlq = await channel.declare_queue(names.dead_queue(task.queue), passive=True)

    # A worker is started again each time one dies, as a Deployment would.
    crashes = 0
    worker = spawn_worker("tests.apps.poison:app", "--concurrency", "1", env=env)
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        dlq = await channel.declare_queue(names.dead_queue(task.queue), passive=True)
        if dlq.declaration_result.message_count == 1:
            break
        assert asyncio.get_running_loop().time() < deadline, f"{crashes} crashes, no dead letter"
        if worker.poll() is not None:
            assert worker.returncode == 3
            crashes += 1
            assert crashes < 6, "the delivery limit must stop the crash loop"
            worker = spawn_worker("tests.apps.poison:app", "--concurrency", "1", env=env)
        await asyncio.sleep(0.2)

    runs = [line.split() for line in ledger.read_text().splitlines()]
    assert [r[0] for r in runs] == [lethal] * 3, "limit 2 allows limit + 1 deliveries"

    # A worker is healthy again for everything else.
    healthy = await app.send(task, Dose(lethal=False))
    if worker.poll() is not None:
        spawn_worker("tests.apps.poison:app", env=env)
    await wait_for(lambda: healthy in ledger.read_text(), timeout=30)

    message = await dlq.get(timeout=5)
    assert message is not None
    assert message.message_id == lethal
    # RabbitMQ's count (x-death) on a quorum queue, the worker's (a header) on a classic one.
    reason = message.headers.get("leveret-reason") or message.headers["x-death"][0]["reason"]  # type: ignore[index]
    assert reason in ("delivery-limit", "delivery_limit")
    await message.ack()


@KINDS
async def test_healthy_tasks_beside_the_poison_are_not_dead_lettered(  # type: ignore[no-untyped-def]
    make_app, spawn_worker, tmp_path: Path, task: Task[Dose]
) -> None:
    """Tasks running beside the poison come back with it, but then run alone: only the
    poison reaches the delivery limit."""
    ledger = tmp_path / "ledger"
    ledger.touch()
    app: App = make_app()
    limit = poison_app.queues[task.queue].delivery_limit
    assert limit is not None
    same_queues(app)
    await app.declare()
    # The poison is fetched together with three healthy tasks, and kills them mid-run.
    healthy = [await app.send(task, Dose(lethal=False, ms=400)) for _ in range(3)]
    lethal = await app.send(task, Dose(lethal=True))
    healthy += [await app.send(task, Dose(lethal=False, ms=50)) for _ in range(8)]

    connection = await app.connector.get()
    channel = await connection.channel()
    names = Names(app.settings.namespace)
    env = {"TEST_LEDGER": str(ledger)}

    def done() -> set[str]:
        return {r[0] for r in map(str.split, ledger.read_text().splitlines()) if r[1] == "done"}

    crashes = 0
    worker = spawn_worker("tests.apps.poison:app", "--concurrency", "4", env=env)
    deadline = asyncio.get_running_loop().time() + 90
    while True:
        dlq = await channel.declare_queue(names.dead_queue(task.queue), passive=True)
        if dlq.declaration_result.message_count >= 1 and done() >= set(healthy):
            break
        assert asyncio.get_running_loop().time() < deadline, (
            f"{crashes} crashes; ledger:\n{ledger.read_text()}\nworker:\n"
            + "\n".join(Output(worker).lines[-40:])
        )
        if worker.poll() is not None:
            assert worker.returncode == 3
            crashes += 1
            worker = spawn_worker("tests.apps.poison:app", "--concurrency", "4", env=env)
        await asyncio.sleep(0.2)

    runs = [r[0] for r in map(str.split, ledger.read_text().splitlines()) if r[1] == "1"]
    assert runs == [lethal] * (limit + 1)
    assert crashes == limit + 1
    await asyncio.sleep(1)  # anything else dead-lettered would be there by now
    dlq = await channel.declare_queue(names.dead_queue(task.queue), passive=True)
    assert dlq.declaration_result.message_count == 1
    letter = await dlq.get(timeout=5)
    assert letter is not None
    assert letter.message_id == lethal
    await letter.ack()
