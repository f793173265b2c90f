"""/livez, /readyz, /metrics and ``leveret check``, against real workers."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import aio_pika

from leveret import App, Worker
from leveret.ops.discovery import free_port
from leveret.ops.health import HealthServer, probe, worker_routes
from leveret.ops.metrics import Metrics
from tests.apps.ops_app import block
from tests.support.models import Job as Ping
from tests.support.models import Sleep
from tests.support.ops import events, start_ops_worker, wait_status
from tests.support.processes import Output, leveret_command
from tests.support.waiting import wait_for
from tests.support.workers import Spawn, running


async def check(port: int, *args: str) -> int:
    """Exit code of ``leveret check`` run as an exec probe would run it."""
    proc = await asyncio.create_subprocess_exec(
        *leveret_command("check", "--port", str(port), "--timeout", "5", *args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return await proc.wait()


async def test_endpoints_follow_the_worker(make_app: Callable[..., App]) -> None:
    app = make_app()
    done: list[int] = []

    @app.task(name="health.ping", queue="health")
    async def ping(msg: Ping) -> None:
        done.append(msg.n)

    worker = Worker(app, concurrency=2)
    metrics = Metrics().install(app).watch(worker)
    server = await HealthServer(worker_routes(worker, metrics), host="127.0.0.1", port=0).start()
    try:
        assert await probe("127.0.0.1", server.port, "/livez") == (200, b"ok\n")
        code, body = await probe("127.0.0.1", server.port, "/readyz")
        assert code == 503
        assert body.startswith(b"not ready: ")
        async with running(worker):
            assert await probe("127.0.0.1", server.port, "/readyz") == (200, b"ready\n")
            await app.send(ping, Ping(n=1))
            await wait_for(lambda: done == [1])
            code, body = await probe("127.0.0.1", server.port, "/metrics")
            assert code == 200
            assert b"leveret_worker_ready 1.0" in body
            assert (await probe("127.0.0.1", server.port, "/nothing"))[0] == 404
        assert (await probe("127.0.0.1", server.port, "/readyz"))[0] == 503
        assert (await probe("127.0.0.1", server.port, "/livez"))[0] == 200
    finally:
        await server.close()


async def test_consumer_cancelled_by_the_broker_is_resubscribed(
    make_app: Callable[..., App], amqp_url: str
) -> None:
    app = make_app()
    done: list[int] = []

    @app.task(name="health.ping", queue="health")
    async def ping(msg: Ping) -> None:
        done.append(msg.n)

    @app.task(name="health.other", queue="other")
    async def other(msg: Ping) -> None:
        done.append(-msg.n)

    worker = Worker(app, concurrency=2)
    server = await HealthServer(worker_routes(worker), host="127.0.0.1", port=0).start()
    connection = await aio_pika.connect(amqp_url)
    try:
        async with running(worker):
            untouched = worker.consumers["other"]
            channel = await connection.channel()
            raw = await channel.get_underlay_channel()
            await raw.queue_delete(app.sender.names.work_queue("health"))

            await wait_for(lambda: not worker.ready)
            code, body = await probe("127.0.0.1", server.port, "/readyz")
            assert code == 503
            assert b"not consuming from health" in body
            assert (await probe("127.0.0.1", server.port, "/livez"))[0] == 200
            await asyncio.sleep(0.5)  # the worker keeps trying; it stays unready meanwhile
            assert not worker.ready
            assert worker.consumers["other"] is untouched, "the other queue's consumer carried on"

            await app.declare(["health"])
            await wait_for(lambda: worker.ready)
            assert (await probe("127.0.0.1", server.port, "/readyz"))[0] == 200
            await app.send(ping, Ping(n=7))
            await app.send(other, Ping(n=8))
            await wait_for(lambda: sorted(done) == [-8, 7])
    finally:
        await connection.close()
        await server.close()


async def test_blocked_loop_fails_liveness(
    make_app: Callable[..., App], spawn_worker: Spawn, tmp_path: Path
) -> None:
    path = tmp_path / "ledger"
    release = tmp_path / "release"
    proc, output, port = await start_ops_worker(
        spawn_worker, path, env={"OPS_RELEASE": str(release)}
    )
    assert await check(port) == 0
    assert await check(port, "--live") == 0

    app = make_app()
    app.add(block)
    await app.send(block, Sleep(seconds=50))  # blocked until released
    await wait_for(lambda: events(path)["start"] == 1)
    assert await check(port, "--live") == 1, "a blocked loop cannot answer"
    release.touch()
    await wait_for(lambda: events(path)["done"] == 1)
    assert await check(port, "--live") == 0
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0, output.text


async def test_liveness_holds_while_the_broker_is_away(spawn_worker: Spawn) -> None:
    port = free_port()
    nobody = free_port()
    proc = spawn_worker(
        "tests.apps.ops_app:app",
        "--health-port",
        str(port),
        env={"LEVERET_URL": f"amqp://guest:secret@127.0.0.1:{nobody}/"},
    )
    output = Output(proc)
    await wait_status(port, "/livez", 200)
    code, body = await probe("127.0.0.1", port, "/readyz")
    assert code == 503
    assert b"not connected" in body
    assert await check(port) == 1
    assert await check(port, "--live") == 0
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0, output.text
    output.join()
    assert "connecting to amqp://guest:***@" in output.text, output.text
    assert "secret" not in output.text


async def test_check_without_a_worker_fails() -> None:
    assert await check(free_port()) == 1


async def test_first_connect_gives_up_at_its_deadline(spawn_worker: Spawn) -> None:
    proc = spawn_worker(
        "tests.apps.ops_app:app",
        "--health-port",
        "0",
        env={
            "LEVERET_URL": f"amqp://guest:secret@127.0.0.1:{free_port()}/",
            "LEVERET_CONNECT_DEADLINE": "2",
        },
    )
    output = Output(proc)
    assert await asyncio.to_thread(proc.wait, 30) == 2
    output.join()
    attempts = [line for line in output.lines if "connecting to amqp://guest:***@" in line]
    assert len(attempts) >= 2, "each attempt is logged:\n" + output.text
    assert "could not connect to RabbitMQ" in output.text
    assert "secret" not in output.text
