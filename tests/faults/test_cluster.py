"""A 3-node cluster with quorum work queues and quorum delay levels loses a node.

Clients are given all three nodes (``LEVERET_URL`` with three comma-separated URLs,
each through a fault proxy); everything is declared through the first node, so the
quorum queues' leaders start there. Then that leader is killed, frozen or cut off.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
from typing import Any

import pytest

from tests.apps.faults_app import QUEUE
from tests.faults.cluster import Cluster
from tests.faults.ledger import longest_gap
from tests.faults.scenario import FULL, LeakedCancel, Scenario, size, span
from tests.faults.test_security import NO_REPLAY, NO_REPLAY_REASON, replay_command
from tests.support import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800 if FULL else 240)]


def on_cluster(make_scenario: Any, cluster: Cluster, **options: Any) -> Scenario:
    app_options = {"queue_type": "quorum", **options.pop("app_options", {})}
    scenario: Scenario = make_scenario(
        cluster.url,
        admin_url=cluster.admin_url,
        delay_queue_type="quorum",
        app_options=app_options,
        **options,
    )
    return scenario


async def start(s: Scenario, cluster: Cluster, workers: int = 2) -> int:
    """Declare, start workers, and return the index of the work queue's leader."""
    await s.declare()
    for _ in range(workers):
        s.workers.spawn()
    await s.workers.wait_ready()
    return await asyncio.to_thread(cluster.leader, s.names.work_queue(QUEUE))


def check_sends(s: Scenario) -> None:
    """Every send ended: confirmed, or raised a proper error within its deadline."""
    errors = s.send_errors()
    assert not errors & {"Hung", LeakedCancel.__name__}, errors
    longest = max(x.seconds for x in s.ledger.sends)
    assert longest <= s.settings.publish_deadline + 2, f"a send took {longest:.1f} s"


async def test_leader_killed_then_restarted(cluster: Cluster, make_scenario) -> None:  # type: ignore[no-untyped-def]
    """0 lost; the longest gap without confirms stays under 10 s (failover to a live node)."""
    s = on_cluster(make_scenario, cluster)
    leader = await start(s, cluster)
    total = size(600, 30_000)
    duration = span(16, 120)
    jobs = [(n, {"ms": 10, "fail": 1 if n % 5 == 0 else 0}) for n in range(total)]
    producer = asyncio.create_task(s.produce(jobs, rate=total / duration, concurrency=16))
    await asyncio.sleep(duration / 4)
    killed_at = time.time()
    await asyncio.to_thread(cluster.kill, leader)
    await asyncio.sleep(span(5, 30))
    await asyncio.to_thread(cluster.restart, leader)
    print(f"leader {cluster.nodes[leader].letter} back after {time.time() - killed_at:.1f} s")
    await producer
    await s.settle(within=size(120, 600))

    verdict = s.verdict()
    assert verdict.lost == [], verdict
    check_sends(s)
    times = s.ledger.confirm_times
    gap = longest_gap(times, times[0], times[-1])
    print(f"longest gap without confirms: {gap:.1f} s")
    assert gap <= 10.0, f"no confirm for {gap:.1f} s"
    retried = {d.task_id: d.attempt for d in s.ledger.read()[1] if int(d.task_id[-7:]) % 5 == 0}
    assert set(retried.values()) == {2}, "a retried task did not finish on attempt 2"


@pytest.mark.parametrize("fault", ["frozen", "partitioned"])
async def test_leader_frozen_or_partitioned(cluster: Cluster, make_scenario, fault: str) -> None:  # type: ignore[no-untyped-def]
    """0 lost; no send waits past its deadline; the cluster heals."""
    if fault == "partitioned" and cluster.no_partitions:
        pytest.skip(f"cannot cut a partition here: {cluster.no_partitions}")
    s = on_cluster(make_scenario, cluster, name=f"leader_{fault}")
    leader = await start(s, cluster)
    hold = span(16, 30) if fault == "frozen" else span(20, 40)
    total = size(500, 20_000)
    lead, tail = 3.0, span(5, 30)
    producer = s.produce_in_background(
        total, rate=total / (lead + hold + tail), ms=10, concurrency=16, resend=5
    )
    await asyncio.sleep(lead)
    if fault == "frozen":
        cluster.freeze(leader)
    else:
        await asyncio.to_thread(cluster.partition, leader)
    await asyncio.sleep(hold)
    if fault == "frozen":
        cluster.thaw(leader)
    else:
        await asyncio.to_thread(cluster.heal)
    healed_at = time.monotonic()
    await producer
    await asyncio.to_thread(cluster.wait_healthy, 180)
    print(f"cluster healthy {time.monotonic() - healed_at:.1f} s after the fault ended")
    await s.settle(within=size(180, 600))

    verdict = s.verdict()
    assert verdict.lost == [], verdict
    check_sends(s)


async def test_channel_nacking_after_failover(cluster: Cluster, make_scenario) -> None:  # type: ignore[no-untyped-def]
    """The publisher replaces a channel that nacks everything; no task stuck > 60 s."""
    s = on_cluster(make_scenario, cluster)
    leader = await start(s, cluster)
    total = size(400, 20_000)
    duration = span(12, 100)
    producer = s.produce_in_background(total, rate=total / duration, ms=5, concurrency=8)
    await asyncio.sleep(duration / 4)
    await asyncio.to_thread(cluster.kill, leader)
    await asyncio.sleep(2)
    # After the failover, the next channel that publishes on any node nacks every
    # message until the client closes it (what one channel did for minutes on 3.10).
    for node in cluster.nodes:
        assert node.proxy is not None
        node.proxy.stick_nacks(1)
    await producer
    await s.settle(within=size(90, 600))
    await asyncio.to_thread(cluster.restart, leader)

    verdict = s.verdict()
    nacked = sum(n.proxy.nacked for n in cluster.nodes if n.proxy is not None)
    print(f"confirms turned into nacks: {nacked}")
    assert nacked > 0, "no channel was made to nack: the scenario did not happen"
    assert verdict.lost == [], verdict
    check_sends(s)
    assert s.send_errors() == set(), "a send failed although fresh channels worked"
    sent_at: dict[str, float] = {}
    for x in s.ledger.sends:
        sent_at.setdefault(x.task_id, x.started)
    stuck = max(d.at - sent_at[d.task_id] for d in s.ledger.read()[1])
    print(f"longest from send to done: {stuck:.1f} s")
    assert stuck <= 60, f"a task took {stuck:.0f} s from send to done"


async def test_retries_through_the_delay_ladder_while_a_node_dies(
    cluster: Cluster,
    make_scenario,  # type: ignore[no-untyped-def]
) -> None:
    """0 lost; attempt counts preserved; each task ends done or in the dead letters."""
    attempts = 3
    s = on_cluster(make_scenario, cluster, app_options={"max_attempts": attempts})
    leader = await start(s, cluster)
    total = size(400, 10_000)
    rng = random.Random(3)
    fails = {n: rng.choice([0, 1, 2, 3]) for n in range(total)}  # 3 = never succeeds
    duration = span(10, 60)
    jobs = [(n, {"ms": 5, "fail": fails[n]}) for n in range(total)]
    producer = asyncio.create_task(s.produce(jobs, rate=total / duration, concurrency=16))
    await asyncio.sleep(duration / 3)
    # The delay levels were declared through the same node: their leaders die too.
    await asyncio.to_thread(cluster.kill, leader)
    await asyncio.sleep(span(5, 20))
    await asyncio.to_thread(cluster.restart, leader)
    await producer
    doomed = {s.task_id(n) for n, f in fails.items() if f >= attempts} & s.ledger.confirmed
    await s.settle(within=size(150, 600), dead=len(doomed))

    dead = {d.task_id: d for d in await s.dead_letters()}
    verdict = s.verdict(dead=set(dead))
    assert verdict.lost == [], verdict
    check_sends(s)
    assert set(dead) == doomed, f"dead letters differ: {sorted(set(dead) ^ doomed)[:5]}"
    for letter in dead.values():
        assert letter.reason == "exhausted", letter.headers
        assert int(letter.headers["leveret-attempt"]) == attempts, letter.headers
    for done in s.ledger.read()[1]:
        wanted = fails[int(done.task_id[-7:])] + 1
        assert done.attempt == wanted, f"{done.task_id} finished on attempt {done.attempt}"


@pytest.mark.skipif(NO_REPLAY, reason=NO_REPLAY_REASON)
async def test_dlq_replay_with_replay_killed_and_a_node_killed(
    cluster: Cluster,
    make_scenario,  # type: ignore[no-untyped-def]
) -> None:
    """0 lost while replaying the dead letters through a crash of the replay and a node."""
    s = on_cluster(make_scenario, cluster, app_options={"max_attempts": 1})
    leader = await start(s, cluster)
    total = size(500, 10_000)
    await s.produce(((n, {"fail": 1}) for n in range(total)), concurrency=32)
    # Wait for every task in the dead-letter queue, leaving them there (settle takes them out).
    deadline = time.monotonic() + size(60, 600)
    while await s.dead_count() < len(s.ledger.confirmed):
        assert time.monotonic() < deadline, "not every task reached the dead-letter queue"
        await asyncio.sleep(0.5)
    # The bug is fixed: new workers no longer fail, and the dead letters go back.
    s.workers.stop_all()
    s.workers.env["FAULTS_HEALED"] = "1"
    s.workers.spawn()
    s.workers.spawn()
    await s.workers.wait_ready()

    env = {**os.environ, **s.workers.env, "PYTHONPATH": str(ROOT)}
    # Slowed down so that the kill lands mid-replay: the whole run would take 5 s (20 s).
    slow = replay_command("tests.apps.faults_app:app", QUEUE, rate=int(total / span(5, 20)))
    replay = await asyncio.create_subprocess_exec(
        *slow, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        said, _ = await asyncio.wait_for(replay.communicate(), span(2, 10))
    except TimeoutError:
        said = b""
    assert replay.returncode is None, "the replay must still be running when it is killed: " + (
        said.decode(errors="replace")
    )
    replay.kill()  # SIGKILL mid-replay
    await replay.wait()
    command = replay_command("tests.apps.faults_app:app", QUEUE)
    await asyncio.to_thread(cluster.kill, (leader + 1) % 3)
    rerun = await asyncio.create_subprocess_exec(
        *command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(rerun.communicate(), size(120, 900))
    assert rerun.returncode == 0, output.decode(errors="replace")
    await asyncio.to_thread(cluster.restart, (leader + 1) % 3)
    await s.settle(within=size(120, 900))

    verdict = s.verdict()
    assert verdict.lost == [], verdict
    assert await s.dead_count() == 0
