"""The network between clients and the node misbehaves: resets, and a black hole.

TaskSender (this process) and workers (subprocesses) reach the node only through a
``FaultProxy``; the test inspects the broker directly.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.faults.conftest import SingleNode
from tests.faults.proxy import FaultProxy, Upstream
from tests.faults.scenario import FULL, LeakedCancel, size, span

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200 if FULL else 150)]


@pytest.fixture
def proxy(node: SingleNode) -> Iterator[FaultProxy]:
    p = FaultProxy(Upstream(port=node.port), name="proxy-single").start()
    yield p
    p.stop()


def retried_after(caplog: pytest.LogCaptureFixture) -> Counter[str]:
    """What the producer's publisher retried after, by exception type."""
    found = (
        re.search(r"failed \((\w+):", r.getMessage())
        for r in caplog.records
        if r.name == "leveret.amqp.publish"
    )
    return Counter(m.group(1) for m in found if m)


async def test_connections_reset_mid_publish_and_mid_consume(
    node: SingleNode,
    proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
    make_scenario,  # type: ignore[no-untyped-def]
) -> None:
    """Every send ends confirmed or raised; consumers are back within 5 s of each reset."""
    s = make_scenario(proxy.url(), admin_url=node.url, concurrency=size(8, 16))
    await s.declare()
    workers = 2
    for _ in range(workers):
        s.workers.spawn()
    await s.workers.wait_ready()

    resets, every = size(4, 20), 3.0
    total = size(600, 20_000)
    producer = s.produce_in_background(
        total, rate=total / (resets * every + 2), ms=100, concurrency=16, resend=5
    )
    back: list[float] = []
    for _ in range(resets):
        await asyncio.sleep(every)
        at = time.time()
        cut = proxy.reset_all()
        assert cut >= workers + 1, f"only {cut} connections were open to cut"
        first = await proxy.wait_consumers(workers, since=at)
        assert len(first) >= workers, "workers did not consume again after a reset"
        back.append(first[workers - 1] - at)
    await producer
    await s.settle(within=size(60, 300))

    verdict = s.verdict()
    print(f"consumers back after each reset in: {', '.join(f'{b:.2f}' for b in back)} s")
    print(f"the producer retried after: {dict(retried_after(caplog))}")
    assert verdict.lost == [], verdict
    errors = s.send_errors()
    assert not errors & {"Hung", LeakedCancel.__name__}, errors
    assert max(back) <= 5.0, f"consumers took {max(back):.1f} s to come back"
    assert {w.pid for w in s.workers.alive} == {w.pid for w in s.workers.procs}


async def test_blackhole_with_heartbeat_5s(
    node: SingleNode,
    proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
    make_scenario,  # type: ignore[no-untyped-def]
) -> None:
    """Loss noticed within 3 heartbeats, recovery within 5 s, no send left hanging."""
    heartbeat = 5
    s = make_scenario(proxy.url(), admin_url=node.url, heartbeat=heartbeat, concurrency=8)
    await s.declare()
    workers = 2
    for _ in range(workers):
        s.workers.spawn()
    await s.workers.wait_ready()

    hole = span(20.0, 30.0)
    total = size(400, 5_000)
    lead, tail = 3.0, span(5.0, 10.0)
    producer = s.produce_in_background(
        total, rate=total / (lead + hole + tail), ms=20, concurrency=8, resend=3
    )
    await asyncio.sleep(lead)
    cut_at = time.time()
    victims = proxy.links_open_at(cut_at)
    proxy.blackhole(True)
    await asyncio.sleep(hole)
    proxy.blackhole(False)
    back_at = time.time()

    # Noticed: each client dropped the connection it had when the traffic stopped.
    gave_up = {e.link: e.at for e in proxy.seen(what="eof", since=cut_at, direction="up")}
    noticed = {link: gave_up.get(link, float("inf")) - cut_at for link in victims}
    # Back: each worker consuming again, and the producer's sends confirmed again.
    consuming = await proxy.wait_consumers(workers, since=back_at)
    await producer
    confirms = [t for t in s.ledger.confirm_times if t >= back_at]
    await s.settle(within=size(60, 300))

    verdict = s.verdict()
    print(
        f"black hole {hole:.0f} s: connections dropped after "
        f"{', '.join(f'{n:.1f}' for n in sorted(noticed.values()))} s; workers consuming "
        f"{', '.join(f'{c - back_at:.1f}' for c in consuming)} s and first confirm "
        f"{(confirms[0] - back_at) if confirms else float('nan'):.1f} s after it ended"
    )
    print(f"the producer retried after: {dict(retried_after(caplog))}")
    assert verdict.lost == [], verdict
    errors = s.send_errors()
    assert not errors & {"Hung", LeakedCancel.__name__}, errors
    assert verdict.longest_send <= s.settings.publish_deadline + 1, verdict
    assert max(noticed.values()) <= 3 * heartbeat, f"loss noticed only after {noticed} s"
    assert len(consuming) >= workers, "workers did not consume again"
    assert consuming[workers - 1] - back_at <= 5.0
    assert confirms, "no send was confirmed after the network came back"
    assert confirms[0] - back_at <= 5.0
    # Nothing left behind: once the app is closed, no coroutine of ours still runs.
    await s.app.close()
    await asyncio.sleep(0.5)
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not pending, f"coroutines still running: {pending}"
