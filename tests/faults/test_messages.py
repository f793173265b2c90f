"""Messages that cannot or must not run: malformed, poison, over-long, refused by a full queue."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aio_pika
import pytest

from leveret import NotConfirmed
from leveret.ops.metrics import Metrics
from tests.apps.faults_app import QUEUE, job
from tests.faults.conftest import SingleNode
from tests.faults.proxy import CHANNEL_CLOSE, FaultProxy, Upstream
from tests.faults.scenario import FULL, size

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200 if FULL else 150)]

#: A malformed message of each kind, and the reason it must be dead-lettered with.
MALFORMED: dict[str, tuple[str | None, bytes, str]] = {
    # kind: (type property, body, expected leveret-reason)
    "not-json": ("faults.job", b"\x00\xff{not json", "malformed"),
    "truncated": ("faults.job", b'{"n": 1, "ms":', "malformed"),
    "wrong-shape": ("faults.job", b'{"n": "one"}', "invalid-payload"),
    "not-an-object": ("faults.job", b"[1, 2, 3]", "invalid-payload"),
    "unknown-task": ("faults.nobody_handles_this", b'{"n": 1}', "unknown-task"),
    "no-type": (None, b'{"n": 1}', "unknown-task"),
}


async def publish_raw(
    url: str, exchange: str, messages: list[tuple[str, str | None, bytes, str]]
) -> None:
    """Publish (id, type, body, content type) as a foreign service would: plain AMQP."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange)
        for start in range(0, len(messages), 500):
            await asyncio.gather(
                *(
                    target.publish(
                        aio_pika.Message(
                            body,
                            message_id=task_id,
                            type=kind,
                            content_type=content_type,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=QUEUE,
                        mandatory=True,
                    )
                    for task_id, kind, body, content_type in messages[start : start + 500]
                )
            )
    finally:
        await connection.close()


async def test_malformed_messages_mixed_with_good_ones(node: SingleNode, make_scenario) -> None:  # type: ignore[no-untyped-def]
    """Every malformed one dead-lettered with its reason, every good one done, no restart."""
    limit = 64 * 1024
    s = make_scenario(node.url, concurrency=16, max_payload_bytes=limit)
    await s.declare()
    worker = s.workers.spawn()
    await s.workers.wait_ready()

    count = size(300, 10_000)
    kinds = [*MALFORMED, "oversize"]
    bad: dict[str, str] = {}
    raw: list[tuple[str, str | None, bytes, str]] = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        task_id = f"bad-{kind}-{i:06d}"
        if kind == "oversize":
            body = json.dumps({"n": i, "pad": "x" * limit}).encode()
            raw.append((task_id, "faults.job", body, "application/json"))
            bad[task_id] = "oversize"
        else:
            name, body, reason = MALFORMED[kind]
            raw.append((task_id, name, body, "application/json"))
            bad[task_id] = reason
    s.ledger.expected.update(bad)
    good = s.produce(((n, {}) for n in range(count)), concurrency=16, resend=0)
    await asyncio.gather(good, publish_raw(s.admin_url, s.names.tasks_exchange, raw))
    await s.settle(within=size(60, 300), dead=count)

    dead = {d.task_id: d for d in await s.dead_letters()}
    verdict = s.verdict(dead=set(dead))
    assert verdict.lost == [], verdict
    assert set(dead) == set(bad), f"unexpected dead letters: {sorted(set(dead) ^ set(bad))[:5]}"
    wrong = {i: (d.reason, bad[i]) for i, d in dead.items() if d.reason != bad[i]}
    assert not wrong, f"wrong reasons (got, wanted): {list(wrong.items())[:5]}"
    assert all(d.headers.get("leveret-error-message") for d in dead.values())
    assert worker.alive, worker.output()[-2000:]
    assert len(s.workers.procs) == 1
    log = worker.output()
    assert "reconnecting" not in log, log[-2000:]
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_poison_task_kills_its_worker_each_time(  # type: ignore[no-untyped-def]
    node: SingleNode, make_scenario, queue_type: str
) -> None:
    """Dead-lettered after limit + 1 deliveries with the reason; the other tasks all done.

    A quorum queue counts deliveries itself; on a classic one the worker counts them."""
    limit = 3
    s = make_scenario(
        node.url,
        name="poison_task_kills_its_worker_each_time"
        + ("" if queue_type == "quorum" else f" ({queue_type})"),
        concurrency=4,
        app_options={"queue_type": queue_type, "delivery_limit": limit},
    )
    await s.declare()
    keep = 2
    for _ in range(keep):
        s.workers.spawn()
    await s.workers.wait_ready()
    s.workers.supervise(keep)

    # A busy queue: every worker has tasks running beside the poison when it dies.
    total = size(200, 10_000)
    poison_n = total // 4
    work = {"ms": size(200, 20)}
    jobs: list[tuple[int, dict[str, Any]]] = [
        (n, {"poison": True} if n == poison_n else work) for n in range(total)
    ]
    await s.produce(jobs, rate=size(100, 1000), resend=0)
    poison = s.task_id(poison_n)
    await s.settle(within=size(90, 300), dead=1)
    await s.workers.stop_supervising()

    dead = {d.task_id: d for d in await s.dead_letters()}
    verdict = s.verdict(dead=set(dead))
    assert verdict.lost == [], verdict
    assert poison in dead, f"dead letters: {sorted(dead)[:5]}"
    # Stopped by the broker's count ("delivery_limit") or the worker's ("delivery-limit").
    assert dead[poison].reason in ("delivery_limit", "delivery-limit"), dead[poison].headers
    runs = s.ledger.runs_by_task()[poison]
    assert len(runs) == limit + 1, f"the poison task ran {len(runs)} times"
    assert set(s.ledger.completed()) | set(dead) == s.ledger.confirmed
    print(f"{s.workers.respawned} workers respawned")
    # The tasks running beside the poison when it killed their worker came back with it,
    # then ran alone: none of them reached the limit.
    by_task = s.ledger.runs_by_task()
    collateral = {
        task_id: (dead[task_id].reason, [(r.pid, r.delivery_count) for r in by_task[task_id]])
        for task_id in sorted(set(dead) - {poison})
    }
    poison_runs = [(r.pid, r.delivery_count) for r in runs]
    assert not collateral, f"dead-lettered beside the poison {poison_runs}: {collateral}"


async def test_task_longer_than_consumer_timeout(node: SingleNode, make_scenario) -> None:  # type: ignore[no-untyped-def]
    """Our own time limit fires first: no PRECONDITION_FAILED, no second run."""
    consumer_timeout_ms = 6000
    # Channels read both when they open; the tick is how often they check (60 s).
    node.ctl(
        "eval",
        f"application:set_env(rabbit, consumer_timeout, {consumer_timeout_ms}), "
        "application:set_env(rabbit, channel_tick_interval, 500).",
    )
    try:
        # The worker reaches the node through a proxy that logs every channel.close.
        proxy = FaultProxy(Upstream(port=node.port), name="proxy-ct").start()
        s = make_scenario(
            proxy.url(),
            admin_url=node.url,
            consumer_timeout=consumer_timeout_ms / 1000,
            app_options={"task_timeout": 3.0, "max_attempts": 1},
            concurrency=2,
        )
        await s.declare()
        worker = s.workers.spawn()
        await s.workers.wait_ready()

        # Control: the node really enforces the short consumer_timeout on a raw consumer.
        control = asyncio.create_task(
            hold_a_delivery(s.admin_url, s.names.work_queue(QUEUE) + ".ctl")
        )
        count = size(3, 20)
        await s.produce(((n, {"ms": 30_000}) for n in range(count)), resend=0)
        await s.settle(within=60, dead=count)
        await asyncio.sleep(consumer_timeout_ms / 1000 + 2)  # room for the broker to act
        closed_by_broker = await control
        closes = proxy.seen(CHANNEL_CLOSE, direction="down")
        log = worker.output()
    finally:
        node.ctl(
            "eval",
            "application:set_env(rabbit, consumer_timeout, 1800000), "
            "application:set_env(rabbit, channel_tick_interval, 60000).",
        )
        proxy.stop()

    dead = {d.task_id: d for d in await s.dead_letters()}
    verdict = s.verdict(dead=set(dead))
    assert "PRECONDITION_FAILED" in closed_by_broker
    assert closes == [], "the broker closed a channel of the worker"
    assert verdict.lost == [], verdict
    assert set(dead) == s.ledger.confirmed
    for letter in dead.values():
        assert letter.headers["leveret-error-type"] == "leveret.errors.TaskTimeout", letter.headers
    runs = s.ledger.runs_by_task()
    assert all(len(r) == 1 for r in runs.values()), "a task ran twice"
    assert "PRECONDITION_FAILED" not in log, log[-3000:]
    assert "reconnecting" not in log, log[-3000:]
    assert worker.alive


async def hold_a_delivery(url: str, queue: str) -> str:
    """Consume one message and never ack it; return why the broker closed the channel."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, auto_delete=True)
        await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=queue)
        closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def on_close(_: object, exc: BaseException | None = None) -> None:
            if not closed.done():
                closed.set_result(str(exc))

        channel.close_callbacks.add(on_close)
        held: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            held.append(message)

        await q.consume(hold)
        return await asyncio.wait_for(closed, 30)
    finally:
        await connection.close()


async def test_full_queue_refuses_publishes(node: SingleNode, make_scenario) -> None:  # type: ignore[no-untyped-def]
    """At x-max-length with reject-publish, senders get an error; nothing dropped silently."""
    max_length = 10
    s = make_scenario(node.url, publish_deadline=3.0, app_options={"max_length": max_length})
    metrics = Metrics().install(s.app)
    await s.declare()
    total = max_length + 5
    started = time.monotonic()
    await s.produce(((n, {}) for n in range(total)), concurrency=total, resend=0)
    elapsed = time.monotonic() - started

    confirmed = s.ledger.confirmed
    refused = [x for x in s.ledger.sends if x.error is not None]
    assert len(confirmed) == max_length, s.ledger.sends
    assert len(refused) == total - max_length
    assert {x.error for x in refused} == {NotConfirmed.__name__}
    assert elapsed < s.settings.publish_deadline + 5

    s.workers.spawn()
    await s.workers.wait_ready()
    await s.settle(within=60)
    await asyncio.sleep(1)
    verdict = s.verdict()
    assert verdict.lost == [], verdict
    # What was refused was not queued: only the confirmed ones ever ran.
    assert set(s.ledger.completed()) == confirmed

    # The back-pressure shows in the senders' metrics.
    refusals = metrics.registry.get_sample_value(
        "leveret_publish_errors_total", {"task": job.name, "queue": QUEUE, "error": "NotConfirmed"}
    )
    assert refusals == total - max_length
