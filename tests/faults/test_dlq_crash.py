"""SIGKILL a replay at any moment: no dead letter is lost, and duplicates are counted."""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable

import pytest

from leveret import App
from tests.support.amqp import fill, queue_size
from tests.support.deadletters import check_nothing_lost, dead_letter
from tests.support.processes import popen_cli

COUNT = 2000
PREFETCH = 500  # DeadLetters' default window: the most one kill can duplicate


async def replay_until_killed(app: App, work_threshold: int) -> bool:
    """Run ``dlq replay`` and SIGKILL it once the work queue holds ``work_threshold``
    messages; False if it finished first."""
    names = app.sender.names
    proc = popen_cli(
        app.settings.url, app.settings.namespace, "dlq", "replay", "-q", "jobs", "--task", "jobs.a"
    )
    try:
        while proc.poll() is None:
            if await queue_size(app.settings.url, names.work_queue("jobs")) >= work_threshold:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            await asyncio.sleep(0.005)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


@pytest.mark.slow
async def test_sigkill_during_replay_loses_nothing(make_app: Callable[..., App]) -> None:
    app = make_app()
    app.queue("jobs")
    await app.declare()
    names = app.sender.names
    letters = [
        (b'{"n": %d}' % i, dead_letter(task="jobs.a" if i % 2 == 0 else "jobs.b", queue="jobs"))
        for i in range(COUNT)
    ]
    await fill(app.settings.url, names.dead_queue("jobs"), letters)
    wanted = {str(p.message_id) for _, p in letters if p.message_type == "jobs.a"}
    kept = {str(p.message_id) for _, p in letters if p.message_type == "jobs.b"}

    rng = random.Random(7)
    kills = 0
    replayed = 0
    for step in (1, 100, 250, rng.randint(50, 400)):
        if await replay_until_killed(app, replayed + step):
            kills += 1
        work, _ = await check_nothing_lost(app, "jobs", wanted, kept)
        replayed = sum(work.values())
    assert kills >= 3, "the replay finished before it could be killed"

    proc = popen_cli(
        app.settings.url, app.settings.namespace, "dlq", "replay", "-q", "jobs", "--task", "jobs.a"
    )
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err.decode()
    work, dead = await check_nothing_lost(app, "jobs", wanted, kept)
    assert set(work) == wanted
    assert set(dead) == kept
    duplicates = sum(work.values()) - len(work) + sum(dead.values()) - len(dead)
    print(
        f"\n{kills} SIGKILLs during a replay of {len(wanted)} of {COUNT} dead letters: "
        f"0 lost, {duplicates} duplicates ({sum(work.values()) - len(work)} replayed twice, "
        f"{sum(dead.values()) - len(dead)} kept twice)"
    )
    assert duplicates <= kills * PREFETCH
