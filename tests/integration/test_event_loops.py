"""A worker process runs the same on uvloop as on asyncio's own loop: async and thread
handlers, signals, a clean drain."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from leveret import App
from tests.apps.ops_app import slow, slow_sync
from tests.support import ROOT
from tests.support.models import Sleep
from tests.support.ops import events, start_ops_worker
from tests.support.processes import cli, leveret_command, leveret_env
from tests.support.waiting import wait_for
from tests.support.workers import Spawn


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_a_worker_runs_async_and_sync_tasks_and_drains_on_sigterm(
    loop: str, make_app: Callable[..., App], spawn_worker: Spawn, tmp_path: Path
) -> None:
    path = tmp_path / "ledger"
    proc, output, _ = await start_ops_worker(spawn_worker, path, "--loop", loop)
    app = make_app()
    app.add(slow)
    app.add(slow_sync)
    await app.send_many(slow, [Sleep(seconds=0.05)] * 20)
    await app.send_many(slow_sync, [Sleep(seconds=0.05)] * 10)
    await wait_for(lambda: events(path)["done"] == 30)
    long = await app.send(slow, Sleep(seconds=1.0))
    await wait_for(lambda: events(path)["start"] == 31)

    proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(proc.wait, 60)

    assert code == 0, output.text
    assert events(path) == {"start": 31, "done": 31}, f"{long} finished before the exit"
    output.join()
    assert any(f"event loop: {loop}" in line for line in output.lines), output.text


def test_an_event_loop_that_cannot_be_had_is_a_clear_error(amqp_url: str, namespace: str) -> None:
    flag = cli(amqp_url, namespace, "worker", "tests.apps.ops_app:app", "--loop", "trio")
    assert flag.returncode == 2
    assert "invalid choice: 'trio'" in flag.stderr
    variable = subprocess.run(
        leveret_command("worker", "tests.apps.ops_app:app"),
        env=leveret_env(amqp_url, namespace, {"LEVERET_LOOP": "trio", "COLUMNS": "200"}),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert variable.returncode == 2, variable.stderr
    assert "unknown event loop 'trio': choose one of auto, uvloop, asyncio" in variable.stderr
