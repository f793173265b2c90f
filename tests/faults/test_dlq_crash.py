"""SIGKILL a replay at any moment: no dead letter is lost, and duplicates are counted."""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter
from collections.abc import Callable

import pytest

from leveret import App
from tests.support.amqp import fill, ids_in, queue_size
from tests.support.deadletters import dead_letter
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


async def check_nothing_lost(
    app: App, wanted: set[str], kept: set[str]
) -> tuple[Counter[str], Counter[str]]:
    """Every replayable id is replayed or still dead; every other one still dead."""
    names = app.sender.names
    for _ in range(50):  # the broker gives back the killed channel's messages
        work = Counter(await ids_in(app.settings.url, names.work_queue("jobs")))
        dead = Counter(await ids_in(app.settings.url, names.dead_queue("jobs")))
        if wanted <= set(work) | set(dead) and kept <= set(dead):
            assert not set(work) - wanted, "a message that did not match was replayed"
            return work, dead
        await asyncio.sleep(0.1)
    missing = (wanted - set(work) - set(dead)) | (kept - set(dead))
    raise AssertionError(f"{len(missing)} dead letters lost, e.g. {sorted(missing)[:3]}")


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
        work, _ = await check_nothing_lost(app, wanted, kept)
        replayed = sum(work.values())
    assert kills >= 3, "the replay finished before it could be killed"

    proc = popen_cli(
        app.settings.url, app.settings.namespace, "dlq", "replay", "-q", "jobs", "--task", "jobs.a"
    )
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err.decode()
    work, dead = await check_nothing_lost(app, wanted, kept)
    assert set(work) == wanted
    assert set(dead) == kept
    duplicates = sum(work.values()) - len(work) + sum(dead.values()) - len(dead)
    print(
        f"\n{kills} SIGKILLs during a replay of {len(wanted)} of {COUNT} dead letters: "
        f"0 lost, {duplicates} duplicates ({sum(work.values()) - len(work)} replayed twice, "
        f"{sum(dead.values()) - len(dead)} kept twice)"
    )
    assert duplicates <= kills * PREFETCH
