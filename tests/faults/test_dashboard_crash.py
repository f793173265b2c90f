"""SIGKILL the dashboard halfway through a replay it started: no dead letter is lost."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from leveret import App
from tests.support.amqp import fill, queue_size
from tests.support.dashboard import TOKEN, groups, serving
from tests.support.deadletters import check_nothing_lost, dead_letter
from tests.support.ops import OPS_APP
from tests.support.waiting import wait_for

COUNT = 2000
PREFETCH = 500  # DeadLetters' window: the most one kill can duplicate


@pytest.mark.slow
async def test_sigkill_of_the_dashboard_during_a_replay_loses_nothing(
    make_app: Callable[..., App], amqp_url: str, namespace: str
) -> None:
    app = make_app()
    app.queue("ops")
    await app.declare()
    letters = [
        (
            b'{"seconds": 0}',
            dead_letter(task="ops.slow", queue="ops", error=OSError(f"disk {i % 7} full")),
        )
        for i in range(COUNT)
    ]
    others = [(b"{}", dead_letter(task="ops.slow", queue="ops")) for _ in range(100)]
    await fill(app.settings.url, app.sender.names.dead_queue("ops"), letters + others)
    wanted = {str(p.message_id) for _, p in letters}
    kept = {str(p.message_id) for _, p in others}
    work_queue = app.sender.names.work_queue("ops")

    env = {"LEVERET_DASHBOARD_TOKEN": TOKEN}
    async with serving(amqp_url, namespace, OPS_APP, env=env) as served:
        async with served.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            key = next(g["key"] for g in await groups(client) if g["count"] == COUNT)
            r = await client.post(
                f"/dead-letters/groups/{key}/replay?format=json", data={"rate": "1000"}
            )
            assert r.status_code == 202, r.text

            async def halfway() -> bool:
                return await queue_size(amqp_url, work_queue) >= COUNT // 2

            await wait_for(halfway, every=0.005)
        served.proc.send_signal(signal.SIGKILL)
        served.proc.wait()

    work, dead = await check_nothing_lost(app, "ops", wanted, kept)
    assert 0 < len(work) < COUNT, "the replay was not stopped halfway"
    duplicates = sum(work.values()) - len(work) + sum(dead.values()) - len(dead)
    print(
        f"\nSIGKILL of the dashboard at {len(work)} of {COUNT} replayed: 0 lost, "
        f"{duplicates} duplicates"
    )
    assert duplicates <= PREFETCH
