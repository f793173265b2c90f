"""A filtered replay over a large dead-letter queue: bounded memory, a clean end, and
dead letters arriving meanwhile neither lost nor replayed in a loop.

20,000 dead letters by default; 100,000 with LEVERET_FAULTS_FULL=1.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator

import psutil
import pytest
from pamqp.commands import Basic

from leveret import NO_RETRY, App, Outcome, Task, Worker, message
from leveret.deadletter import DeadLetters
from tests.support.amqp import fill, queue_size
from tests.support.deadletters import dead_letter, fast_traceback
from tests.support.models import Job
from tests.support.processes import popen_cli
from tests.support.waiting import wait_for
from tests.support.workers import running

FULL = os.environ.get("LEVERET_FAULTS_FULL") == "1"
COUNT = 100_000 if FULL else 20_000
EVERY = 10  # one dead letter in ten matches the replay's filter
ARRIVING = 500
RSS_LIMIT = 200 * 1024 * 1024


def letters(
    count: int, start: int = 0, task: str | None = None
) -> Iterator[tuple[bytes, Basic.Properties]]:
    """Dead letters; one in ``EVERY`` is a jobs.retry_me unless ``task`` is given."""
    tb = fast_traceback(800)
    for i in range(start, start + count):
        name = task or ("jobs.retry_me" if i % EVERY == 0 else "jobs.other")
        props = dead_letter(task=name, queue="jobs", extra={message.TRACEBACK: tb})
        yield b'{"n": %d, "pad": "%s"}' % (i, b"x" * 200), props


@pytest.mark.slow
@pytest.mark.timeout(900 if FULL else 120)
async def test_filtered_replay_of_many_stays_small_and_ends(make_app: Callable[..., App]) -> None:
    app = make_app()
    retry_me = Task("jobs.retry_me", Job, queue="jobs")

    @app.handle(retry_me, retry=NO_RETRY)
    async def still_broken(payload: Job) -> None:
        raise RuntimeError("still broken")  # straight back to the dead letters

    await app.declare()
    url, names = app.settings.url, app.sender.names
    started = time.monotonic()
    await fill(url, names.dead_queue("jobs"), letters(COUNT))
    filled = time.monotonic() - started
    print(f"\nfilled {COUNT:,} in {filled:.1f} s")
    matching = COUNT // EVERY

    worker = Worker(app, concurrency=32)
    async with running(worker):
        started = time.monotonic()
        proc = popen_cli(
            url, app.settings.namespace, "dlq", "replay", "-q", "jobs", "--task", "jobs.retry_me"
        )
        sampler = psutil.Process(proc.pid)
        peak, arrivals = 0, None
        while proc.poll() is None:
            try:
                peak = max(peak, sampler.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            if arrivals is None and worker.counts[Outcome.DEAD_LETTERED] > 0:
                # Replays are already failing back; now new dead letters arrive too.
                arrivals = asyncio.create_task(
                    fill(
                        url,
                        names.dead_queue("jobs"),
                        letters(ARRIVING, start=COUNT, task="jobs.retry_me"),
                        window=50,
                    )
                )
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        proc.stderr.close()
        assert proc.returncode == 0, err
        assert arrivals is not None, "no replayed task came back during the replay"
        await arrivals
        await wait_for(lambda: worker.counts[Outcome.DEAD_LETTERED] == matching, timeout=60)

    print(
        f"\nreplay of {matching:,} out of {COUNT:,} dead letters (+{ARRIVING} arriving): "
        f"{elapsed:.1f} s ({COUNT / elapsed:,.0f} scanned/s), peak RSS "
        f"{peak / 2**20:.0f} MB; filling took {filled:.1f} s"
    )
    assert f"replayed {matching:,} dead letters" in err
    assert await queue_size(url, names.work_queue("jobs")) == 0
    async with DeadLetters(app) as dead:
        total = (await dead.sizes())["jobs"]
        assert total == COUNT + ARRIVING
        seen: Counter[tuple[str | None, int]] = Counter()
        async for letter in dead.scan():
            seen[(letter.task, letter.replays)] += 1
    assert seen == {
        ("jobs.other", 0): COUNT - matching,
        ("jobs.retry_me", 1): matching,  # replayed once, failed back, not replayed again
        ("jobs.retry_me", 0): ARRIVING,  # arrived meanwhile: untouched
    }
    assert peak < RSS_LIMIT, f"replay peaked at {peak / 2**20:.0f} MB"


@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="a measurement: runs with LEVERET_FAULTS_FULL=1")
async def test_operation_rates(make_app: Callable[..., App]) -> None:
    """Dead letters a second for each operation, printed (asserts only the counts)."""
    app = make_app()
    app.queue("jobs")
    await app.declare()
    url, names = app.settings.url, app.sender.names
    size = 10_000
    rows = []
    async with DeadLetters(app) as dead:
        for name in ("list", "purge everything", "replay all", "replay 1 in 10"):
            await fill(url, names.dead_queue("jobs"), letters(size))
            started = time.monotonic()
            if name == "list":
                done = len(await dead.letters(limit=None))
            elif name == "purge everything":
                done = (await dead.purge()).moved
            elif name == "replay all":
                done = (await dead.replay()).moved
            else:
                done = (await dead.replay({"task": "jobs.retry_me"})).moved
            rows.append((name, size / (time.monotonic() - started)))
            assert done == (size // EVERY if name.endswith("1 in 10") else size)
            await dead.purge()
            await purge_queue(url, names.work_queue("jobs"))
    print(f"\n{size:,} dead letters of ~1.3 KB, classic queues:")
    for name, rate in rows:
        print(f"  {name:<18} {rate:>7,.0f} dead letters/s")


async def purge_queue(url: str, queue: str) -> None:
    import aiormq

    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.queue_purge(queue)
    finally:
        await connection.close()
