"""``app.sync``: blocking sends from many threads and from forked children, confirmed."""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from leveret import (
    App,
    ConfigError,
    InvalidArgument,
    NotConfirmed,
    PayloadInvalid,
    Task,
    TaskContext,
    Unroutable,
    Worker,
)
from leveret.loop_thread import LoopThread
from tests.support import ROOT
from tests.support.amqp import ids_in, peek
from tests.support.models import Job, Sleep
from tests.support.processes import leveret_env
from tests.support.waiting import wait_for
from tests.support.workers import running

THREADS = 16
TASKS = 10_000


async def test_sixteen_threads_send_ten_thousand_all_confirmed_all_run_once(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    job = Task("sync.many_threads", Job, queue="sync-threads")
    runs: collections.Counter[int] = collections.Counter()

    @app.handle(job)
    async def handle(payload: Job) -> None:
        runs[payload.n] += 1

    await app.declare()

    def sender(first: int) -> list[str]:
        return [app.sync.send(job, Job(n=n)) for n in range(first, TASKS, THREADS)]

    async with running(Worker(app, concurrency=64)):
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(THREADS) as pool:
            sent = await asyncio.gather(
                *(loop.run_in_executor(pool, sender, i) for i in range(THREADS))
            )
        ids = [task_id for batch in sent for task_id in batch]
        assert len(set(ids)) == TASKS  # every send returned its own confirmed id
        await wait_for(lambda: sum(runs.values()) >= TASKS, what=lambda: f"{len(runs)} ran")
    assert sorted(runs) == list(range(TASKS))
    assert set(runs.values()) == {1}


async def test_sync_send_keeps_the_options_and_errors_of_send(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    job = app.add(Task("sync.options", Job, queue="sync-options"))
    seen: list[tuple[int, str]] = []

    @app.handle(job)
    async def handle(payload: Job, ctx: TaskContext) -> None:
        seen.append((payload.n, ctx.task_id))

    await app.declare()
    send = app.sync.send
    await asyncio.to_thread(send, job, Job(n=1), priority=7, task_id="sync-given-id")
    [held] = await peek(app.settings.urls[0], app.sender.names.work_queue("sync-options"))
    assert held.header.properties.priority == 7
    assert held.header.properties.message_id == "sync-given-id"
    async with running(Worker(app, concurrency=4)):
        await asyncio.to_thread(send, job, Job(n=2), delay=timedelta(milliseconds=50))
        at = datetime.now(UTC) + timedelta(milliseconds=50)
        await asyncio.to_thread(send, job, Job(n=3), at=at)
        ids = await asyncio.to_thread(app.sync.send_many, job, [Job(n=4), Job(n=5)], delay=0.05)
        await wait_for(lambda: len(seen) == 5, what=lambda: f"ran {seen}")
    assert (1, "sync-given-id") in seen
    assert {task_id for n, task_id in seen if n in (4, 5)} == set(ids)

    with pytest.raises(PayloadInvalid, match="takes Job, not Sleep"):
        send(job, Sleep(seconds=1))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="priority"):
        await asyncio.to_thread(send, job, Job(n=6), priority=99)
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        await asyncio.to_thread(send, job, Job(n=6), at=datetime.now() + timedelta(seconds=1))
    nowhere = Task("sync.nowhere", Job, queue="sync-nobody-listens")
    with pytest.raises(Unroutable, match="sync-nobody-listens"):
        await asyncio.to_thread(send, nowhere, Job(n=7))


async def test_check_refuses_before_connecting(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app(url="amqp://guest:guest@127.0.0.1:1/")  # nothing listens there
    job = Task("sync.checked", Job, queue="sync-checked")
    app.sync.check(job, Job(n=1), priority=3, delay=10)
    with pytest.raises(PayloadInvalid):
        app.sync.check(job, {"n": 1})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="delay must be >= 0"):
        app.sync.check(job, Job(n=1), delay=-1)
    assert not app.sync.started


async def test_close_lets_sends_finish_and_a_later_send_reopens(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    job = app.add(Task("sync.reopen", Job, queue="sync-reopen"))
    await app.declare()
    first = await asyncio.to_thread(app.sync.send, job, Job(n=1))
    await asyncio.to_thread(app.sync.close)
    assert not app.sync.started
    second = await asyncio.to_thread(app.sync.send, job, Job(n=2))
    assert app.sync.started
    await app.close()  # closes the sync side too
    assert not app.sync.started
    queue = app.sender.names.work_queue("sync-reopen")
    assert sorted(await ids_in(app.settings.urls[0], queue)) == sorted([first, second])


def test_a_send_from_the_loop_thread_itself_is_refused() -> None:
    async def close(_: object) -> None:
        return None

    owner: LoopThread[object] = LoopThread("test-loop", object, close)

    async def nested(_: object) -> None:
        owner.call(lambda __: asyncio.sleep(0))

    try:
        with pytest.raises(ConfigError, match="its own event-loop thread"):
            owner.call(nested)
    finally:
        owner.close(timeout=10)


def test_a_call_still_running_at_close_gets_not_confirmed() -> None:
    async def close(_: object) -> None:
        return None

    owner: LoopThread[object] = LoopThread("test-loop", object, close)
    started = threading.Event()

    async def forever(_: object) -> None:
        started.set()
        await asyncio.Event().wait()

    errors: list[BaseException] = []

    def call() -> None:
        try:
            owner.call(forever)
        except BaseException as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert started.wait(30)
    owner.close(timeout=0.5)  # the call never ends by itself
    caller.join(30)
    assert len(errors) == 1
    assert isinstance(errors[0], NotConfirmed)


async def test_a_forked_child_sends_on_its_own_connection(amqp_url: str, make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    app.add(Task("sync.forked", Job, queue="forked"))
    await app.declare()
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tests.apps.sync_fork"],
        env=leveret_env(amqp_url, app.settings.namespace),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr  # exit closed both cleanly
    reports = {line["who"]: line for line in map(json.loads, proc.stdout.splitlines())}
    parent, child = reports["parent"], reports["child"]
    assert parent["name"].endswith(f"-{parent['pid']}")
    assert child["name"].endswith(f"-{child['pid']}")
    # The child holds the parent's socket (inherited, never used) and one of its own.
    assert set(child["ports"]) - set(parent["ports"]), reports
    sent = parent["ids"] + child["ids"]
    queued = await ids_in(amqp_url, app.sender.names.work_queue("forked"))
    assert sorted(queued) == sorted(sent)
    assert len(sent) == 6
