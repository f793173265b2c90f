"""A worker acks only after the handler returns: killing it mid-task loses nothing."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from leveret import App
from tests.apps.spine import Job, job
from tests.support.waiting import wait_for


def ledger_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


async def test_sigkill_mid_task_leaves_it_for_the_next_worker(  # type: ignore[no-untyped-def]
    make_app, spawn_worker, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    app: App = make_app()
    app.add(job)
    await app.declare()
    slow = await app.send(job, Job(seconds=30))
    quick = [await app.send(job, Job(seconds=0)) for _ in range(20)]

    env = {"TEST_LEDGER": str(ledger)}
    first = spawn_worker("tests.apps.spine:app", "--concurrency", "4", env=env)
    started = lambda: any(r[:2] == ["start", slow] for r in ledger_lines(ledger))  # noqa: E731
    await wait_for(started, timeout=30)
    first.send_signal(signal.SIGKILL)
    assert await asyncio.to_thread(first.wait, 10) == -signal.SIGKILL

    spawn_worker("tests.apps.spine:app", "--concurrency", "4", env=env)

    # The slow job runs again, redelivered; it sleeps 30 s, so wait for its second
    # start rather than its end. Every quick job completes: nothing is lost.
    def second_start() -> bool:
        return [r for r in ledger_lines(ledger) if r[:2] == ["start", slow]][1:] != []

    def quick_all_done() -> bool:
        return set(quick) <= {r[1] for r in ledger_lines(ledger) if r[0] == "done"}

    await wait_for(second_start, timeout=30)
    await wait_for(quick_all_done, timeout=30)
    rows = ledger_lines(ledger)
    slow_starts = [r for r in rows if r[:2] == ["start", slow]]
    assert slow_starts[0][2] == "0"
    assert slow_starts[1][2] == "1", "the second run must see redelivered=True"
    assert len(slow_starts) == 2
