"""The single node goes away and comes back while producers and workers run."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.conftest import SingleNode
from tests.faults.scenario import FULL, LeakedCancel, size

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200 if FULL else 150)]


async def test_node_restarted_mid_stream(node: SingleNode, make_scenario) -> None:  # type: ignore[no-untyped-def]
    """0 lost among confirmed; every send confirmed or raised; workers resume in place."""
    s = make_scenario(node.url, concurrency=8, publish_deadline=15.0)
    await s.declare()
    total = size(500, 20_000)
    for _ in range(2):
        s.workers.spawn()
    await s.workers.wait_ready()
    pids = {w.pid for w in s.workers.alive}

    rate = total / size(12, 120)
    producer = s.produce_in_background(total, rate=rate, ms=20, concurrency=16, resend=5)
    await asyncio.sleep(size(3, 30))
    outage = await asyncio.to_thread(node.crash_and_restart)
    up = time.time()
    print(f"node down for {outage:.1f} s")
    await producer
    await s.settle(within=size(90, 300))

    verdict = s.verdict()
    assert verdict.lost == [], verdict
    errors = s.send_errors()
    assert not errors & {"Hung", LeakedCancel.__name__}, errors
    assert errors <= {"NotConfirmed"}, errors
    assert {w.pid for w in s.workers.alive} == pids, "a worker process restarted"
    resumed = {d.pid for d in s.ledger.read()[1] if d.at > up}
    assert resumed == pids, f"workers {pids - resumed} did no work after the node came back"
