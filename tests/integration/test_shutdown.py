"""SIGTERM drains a worker: running tasks finish, nothing new starts, nothing is lost."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from leveret import App
from tests.apps.ops_app import slow, slow_sync
from tests.support.amqp import queue_size
from tests.support.models import Sleep
from tests.support.ops import events, ledger, metric, scrape, start_ops_worker, wait_status
from tests.support.waiting import wait_for
from tests.support.workers import Spawn


async def exited(proc: subprocess.Popen[bytes], within: float) -> int:
    return await asyncio.to_thread(proc.wait, within)


async def queued(app: App, queue: str) -> int:
    return await queue_size(app.settings.url, app.sender.names.work_queue(queue))


async def test_sigterm_lets_running_tasks_finish_and_takes_no_new_ones(
    make_app: Callable[..., App], spawn_worker: Spawn, tmp_path: Path
) -> None:
    path = tmp_path / "ledger"
    proc, output, port = await start_ops_worker(
        spawn_worker, path, "--concurrency", "16", "--shutdown-timeout", "30"
    )
    app = make_app()
    app.add(slow)
    await app.send_many(slow, [Sleep(seconds=5.0)] * 10)  # long enough to see it unready
    await wait_for(lambda: events(path)["start"] == 10)

    proc.send_signal(signal.SIGTERM)
    await wait_status(port, "/readyz", 503, within=5)
    later = await app.send_many(slow, [Sleep(seconds=0.0)] * 5)  # must wait for another worker
    started = time.monotonic()
    code = await exited(proc, 40)
    took = time.monotonic() - started

    assert code == 0, output.text
    assert took < 30, f"drained in {took:.1f} s"
    assert events(path) == {"start": 10, "done": 10}
    assert not any(redelivered for _, _, redelivered in ledger(path))
    assert await queued(app, "ops") == len(later)
    output.join()
    assert any("SIGTERM received" in line for line in output.lines), output.text


async def test_tasks_longer_than_the_timeout_are_redelivered_to_another_worker(
    make_app: Callable[..., App], spawn_worker: Spawn, tmp_path: Path
) -> None:
    path = tmp_path / "ledger"
    first, output, _ = await start_ops_worker(
        spawn_worker, path, "--concurrency", "4", "--shutdown-timeout", "1"
    )
    app = make_app()
    app.add(slow)
    app.add(slow_sync)
    ids = await app.send_many(slow, [Sleep(seconds=4.0)] * 2)
    ids += await app.send_many(slow_sync, [Sleep(seconds=4.0)] * 2)
    await wait_for(lambda: events(path)["start"] == 4)

    first.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = await exited(first, 30)
    took = time.monotonic() - started
    # Started only now: however long a start takes, the tasks can only reach it
    # through the first worker letting go of them.
    second, _, _ = await start_ops_worker(spawn_worker, path, "--concurrency", "4")

    assert code == 0, output.text
    assert took < 30, f"exited {took:.1f} s after SIGTERM"
    await wait_for(lambda: events(path)["done"] == 4, timeout=30)
    done = [(task_id, again) for event, task_id, again in ledger(path) if event == "done"]
    assert sorted(task_id for task_id, _ in done) == sorted(ids)
    # Finished once each, all by the second worker: the first one neither waited for
    # its task threads (1 s of grace) nor let them finish after it had let go.
    assert all(again for _, again in done), "finished by the second worker, as redeliveries"
    second.send_signal(signal.SIGTERM)
    assert await exited(second, 30) == 0


async def test_second_sigint_exits_at_once(
    make_app: Callable[..., App], spawn_worker: Spawn, tmp_path: Path
) -> None:
    path = tmp_path / "ledger"
    proc, output, _ = await start_ops_worker(spawn_worker, path, "--shutdown-timeout", "60")
    app = make_app()
    app.add(slow)
    await app.send(slow, Sleep(seconds=60))
    await wait_for(lambda: events(path)["start"] == 1)

    proc.send_signal(signal.SIGINT)
    await wait_for(lambda: "SIGINT received" in output.text, what="the first SIGINT is seen")
    assert proc.poll() is None, "the first SIGINT drains"
    proc.send_signal(signal.SIGINT)
    assert await exited(proc, 30) == 130, output.text
    assert await queued(app, "ops") == 1, "the unfinished task went back to the queue"


@pytest.mark.slow
async def test_processes_restart_a_dead_child_and_drain_on_sigterm(
    make_app: Callable[..., App], spawn_worker: Spawn, tmp_path: Path
) -> None:
    path = tmp_path / "ledger"
    parent, output, port = await start_ops_worker(
        spawn_worker, path, "--processes", "2", "--concurrency", "4", "--shutdown-timeout", "30"
    )
    children = psutil.Process(parent.pid).children()
    assert len(children) == 2, output.text
    text = await scrape(port)
    assert metric(text, "leveret_worker_ready") == 1

    killed = children[0].pid
    children[0].kill()

    def living() -> set[int]:
        return {
            c.pid
            for c in psutil.Process(parent.pid).children()
            if c.status() != psutil.STATUS_ZOMBIE
        }

    await wait_for(lambda: len(living() - {killed}) == 2, timeout=30)
    await wait_status(port, "/readyz", 200)

    app = make_app()
    app.add(slow)
    await app.send_many(slow, [Sleep(seconds=1.0)] * 8)
    await wait_for(lambda: events(path)["start"] == 8)
    pids = [c.pid for c in psutil.Process(parent.pid).children()]
    parent.send_signal(signal.SIGTERM)
    assert await exited(parent, 60) == 0, output.text
    assert events(path) == {"start": 8, "done": 8}
    assert not any(psutil.pid_exists(pid) for pid in pids), "no worker outlives its parent"
