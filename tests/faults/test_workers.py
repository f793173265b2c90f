"""Worker processes dying: SIGKILL mid-task, over and over; SIGTERM under load."""

from __future__ import annotations

import asyncio
import random
import signal
import time

import pytest

from tests.faults.conftest import SingleNode
from tests.faults.scenario import FULL, size

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200 if FULL else 150)]


async def test_workers_sigkilled_over_and_over(node: SingleNode, make_scenario) -> None:  # type: ignore[no-untyped-def]
    """0 lost; every task a kill interrupted is redelivered with ``redelivered`` set."""
    s = make_scenario(node.url, concurrency=8)
    await s.declare()
    total, wanted, keep = size(600, 20_000), size(25, 300), 3
    for _ in range(keep):
        s.workers.spawn()
    await s.workers.wait_ready()

    s.workers.supervise(keep)
    rate = total / (wanted * 0.45)
    producer = s.produce_in_background(total, rate=rate, ms=40)
    rng = random.Random(7)
    while len(s.workers.kills) < wanted:
        await asyncio.sleep(0.4)
        ready = [w for w in s.workers.alive if w.ready and time.time() - w.started > 0.5]
        if ready:
            s.workers.kill(rng.choice(ready))
    await producer
    await s.settle(within=size(60, 300))
    await s.workers.stop_supervising()

    verdict = s.verdict()
    assert verdict.lost == [], verdict
    assert not s.send_errors(), s.send_errors()

    # Every task a killed worker had started but not finished ran again, redelivered.
    runs = s.ledger.runs_by_task()
    finished = {(d.task_id, d.pid) for d in s.ledger.read()[1]}
    interrupted = 0
    for pid, killed_at in s.workers.kills:
        for task_id, task_runs in runs.items():
            if not any(r.pid == pid for r in task_runs) or (task_id, pid) in finished:
                continue
            interrupted += 1
            again = [r for r in task_runs if r.at >= killed_at - 0.05 and r.pid != pid]
            assert again, f"task {task_id} was interrupted by the kill of {pid} and never ran again"
            assert again[0].redelivered, f"task {task_id} ran again without `redelivered` set"
    print(f"{len(s.workers.kills)} kills interrupted {interrupted} running tasks")
    assert interrupted >= len(s.workers.kills) // 2, "most kills should have hit running tasks"


async def test_sigterm_half_the_workers_under_load(node: SingleNode, make_scenario) -> None:  # type: ignore[no-untyped-def]
    """Running tasks finish or go back to the queue within the grace period; 0 lost."""
    grace = 4.0
    s = make_scenario(node.url, concurrency=4, shutdown_timeout=grace)
    await s.declare()
    total, keep = size(300, 10_000), 4
    for _ in range(keep):
        s.workers.spawn()
    await s.workers.wait_ready()

    # Mostly short tasks; a few sent in the second before the signal outlast the grace.
    rate = total / span_seconds(total)
    before = range(int(2 * rate), int(3 * rate))
    jobs = [(n, {"ms": 6000 if n in before and n % 15 == 0 else 60}) for n in range(total)]
    producer = asyncio.create_task(s.produce(jobs, rate=rate))
    await asyncio.sleep(3)
    victims = s.workers.alive[: keep // 2]
    signalled = time.time()
    for worker in victims:
        s.workers.kill(worker, signal.SIGTERM)
    codes = [await s.workers.wait_exit(w, grace + 10) for w in victims]
    exited = time.time()
    await producer
    await s.settle(within=size(60, 300))

    verdict = s.verdict()
    assert verdict.lost == [], verdict
    assert codes == [0] * len(victims), [w.output()[-2000:] for w in victims]
    assert exited - signalled <= grace + 5, f"workers took {exited - signalled:.1f} s to exit"

    runs = s.ledger.runs_by_task()
    dones = s.ledger.read()[1]
    pids = {w.pid for w in victims}
    finished = {(d.task_id, d.pid): d.at for d in dones}
    returned = finished_in_grace = 0
    for task_id, task_runs in runs.items():
        for run in task_runs:
            if run.pid not in pids:
                continue
            assert run.at < signalled + 1, (
                f"{task_id} started {run.at - signalled:.1f} s after SIGTERM"
            )
            done_at = finished.get((task_id, run.pid))
            if done_at is not None:
                if done_at > signalled:
                    finished_in_grace += 1
                    assert done_at <= signalled + grace + 0.5, f"{task_id} finished after the grace"
                continue
            later = [r for r in task_runs if r.pid not in pids and r.at > run.at]
            assert later, f"{task_id} was not returned to the queue"
            assert later[0].redelivered, f"{task_id} came back without `redelivered` set"
            returned += 1
    print(
        f"SIGTERM: {finished_in_grace} running tasks finished within the grace, {returned} returned"
    )
    assert returned > 0, "some running tasks outlasted the grace period and must have gone back"


def span_seconds(total: int) -> float:
    return 8.0 if not FULL else total / 200
