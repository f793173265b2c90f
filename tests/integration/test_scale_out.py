"""Workers scale out on one queue: a fixed workload is done once, whatever the count."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest

from leveret import App
from tests.apps.spine import Job, job
from tests.support.processes import Output
from tests.support.waiting import wait_for

TASKS = 600


@pytest.mark.parametrize("processes", [1, 2, 4])
async def test_each_task_runs_once_across_worker_processes(  # type: ignore[no-untyped-def]
    make_app, spawn_worker, tmp_path: Path, processes: int
) -> None:
    ledger = tmp_path / "ledger"
    ledger.touch()
    app: App = make_app()
    app.add(job)
    await app.declare()
    env = {"TEST_LEDGER": str(ledger)}
    workers = [
        spawn_worker("tests.apps.spine:app", "--concurrency", "16", "--health-port", "0", env=env)
        for _ in range(processes)
    ]
    await wait_for(lambda: all("consuming" in Output(w).text for w in workers), timeout=60)
    ids = await app.send_many(job, [Job(seconds=0.002) for _ in range(TASKS)])

    def done() -> Counter[str]:
        return Counter(
            line.split()[1] for line in ledger.read_text().splitlines() if line.startswith("done")
        )

    await wait_for(lambda: len(done()) == TASKS, timeout=90)
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    codes = [await asyncio.to_thread(w.wait, 30) for w in workers]

    runs = done()
    assert set(runs) == set(ids), "none lost"
    assert max(runs.values()) == 1, "none run twice"
    assert codes == [0] * processes
