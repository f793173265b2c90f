"""Three scheduler replicas through kills, a freeze and a broker restart: every slot of
every schedule is fired, and any duplicate is one a crash explains.

The replicas are ``leveret scheduler`` processes on the fault suite's own node: the
leader is SIGKILLed again and again (and started again, as a Deployment would), once
SIGSTOPped for 15 s (so the broker drops it on heartbeat and it wakes up as a
zombie that must not fire), and the node is restarted once. The tasks' queue has no
consumer, so it holds every confirmed firing: the ledger is read from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from leveret import Settings
from leveret.ops.discovery import free_port
from leveret.ops.health import probe
from leveret.scheduler.timing import Every
from tests.apps.schedules_app import QUEUE
from tests.faults.conftest import SingleNode
from tests.faults.scenario import FULL, span
from tests.support.amqp import delete_namespace, fresh_namespace
from tests.support.processes import leveret_command, leveret_env
from tests.support.scheduler import Ledger, delete_scheduler_queues, firings
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in.*stdout.log:pytest.PytestUnraisableExceptionWarning"
    ),
]

SCHEDULES = {"tick-1s": Every(timedelta(seconds=1)), "tick-5s": Every(timedelta(seconds=5))}


@dataclass
class Replica:
    index: int
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    async def role(self) -> str | None:
        if self.proc.poll() is not None:
            return None
        try:
            code, body = await probe("127.0.0.1", self.port, "/readyz", 1.0)
        except (OSError, TimeoutError):
            return None  # frozen, or not listening yet
        text = body.decode()
        return "leader" if "leader" in text else "standby" if code == 200 else None

    def records(self) -> list[dict[str, object]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line))
        return found


class Replicas:
    def __init__(self, url: str, namespace: str, tmp: Path) -> None:
        self.env = leveret_env(
            url,
            namespace,
            {
                "LEVERET_HEARTBEAT": "5",
                "LEVERET_LOG_FORMAT": "json",
                "LEVERET_PUBLISH_DEADLINE": "20",
            },
        )
        self.tmp = tmp
        self.all: list[Replica] = []
        self.live: dict[int, Replica] = {}

    def start(self, index: int) -> Replica:
        port = free_port()
        log = self.tmp / f"replica-{index}-{len(self.all)}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                leveret_command(
                    "scheduler", "tests.apps.schedules_app:app", "--health-port", str(port)
                ),
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        replica = Replica(index, port, log, proc)
        self.all.append(replica)
        self.live[index] = replica
        return replica

    async def leader(self, within: float = 90.0) -> Replica:
        found: list[Replica] = []

        async def one() -> bool:
            roles = [(r, await r.role()) for r in self.live.values()]
            found[:] = [r for r, role in roles if role == "leader"]
            return len(found) == 1

        await wait_for(one, timeout=within, every=0.2, what="a single leader among the replicas")
        return found[0]

    def stop_all(self) -> None:
        for replica in self.all:
            if replica.proc.poll() is None:
                replica.proc.send_signal(signal.SIGCONT)
                replica.proc.send_signal(signal.SIGTERM)
        for replica in self.all:
            try:
                replica.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                replica.proc.kill()
                replica.proc.wait(timeout=10)

    def unrecorded(self) -> int:
        return sum(
            r.get("event") == "schedule.unrecorded" for rep in self.all for r in rep.records()
        )


async def test_replicas_fire_every_slot_through_kills_a_freeze_and_a_broker_restart(
    node: SingleNode, tmp_path: Path
) -> None:
    namespace = fresh_namespace("s")
    replicas = Replicas(node.url, namespace, tmp_path)
    duration = span(75.0, 300.0)
    kills = 0
    events: list[str] = []
    # (seconds after the start, what happens): a kill every 20 s (every 15 s in the
    # fast run), one 15 s freeze, one broker restart in between.
    timeline = [
        (t, "kill")
        for t in range(15 if not FULL else 20, int(duration) - 5, 15 if not FULL else 20)
    ]
    timeline += [(span(22.0, 100.0), "freeze"), (span(45.0, 200.0), "restart")]
    timeline.sort()
    started = time.monotonic()
    try:
        for index in range(3):
            replicas.start(index)
        await replicas.leader()
        for at, action in timeline:
            await asyncio.sleep(max(0.0, at - (time.monotonic() - started)))
            if action == "restart":
                await asyncio.to_thread(node.stop)
                await asyncio.to_thread(node.start)
                events.append(f"{time.monotonic() - started:.0f}s broker restarted")
                continue
            leader = await replicas.leader()
            if action == "kill":
                leader.proc.send_signal(signal.SIGKILL)
                leader.proc.wait(timeout=10)
                kills += 1
                replicas.start(leader.index)
                events.append(f"{time.monotonic() - started:.0f}s killed replica {leader.index}")
            else:
                leader.proc.send_signal(signal.SIGSTOP)
                events.append(f"{time.monotonic() - started:.0f}s froze replica {leader.index}")
                await asyncio.sleep(15)
                leader.proc.send_signal(signal.SIGCONT)
        await asyncio.sleep(max(0.0, duration - (time.monotonic() - started)))
        await replicas.leader()
        # Let the last slots be recorded before stopping: a clean stop loses none.
        await asyncio.sleep(2)
    finally:
        replicas.stop_all()
    try:
        fired = await firings(node.url, f"{namespace}.q.{QUEUE}")
    finally:
        await delete_scheduler_queues(node.url, namespace)
        await delete_namespace(
            node.url, Settings(url=node.url, namespace=namespace), [QUEUE], best_effort=True
        )
    ledgers = [Ledger.of(name, timing, fired) for name, timing in SCHEDULES.items()]
    unrecorded = replicas.unrecorded()
    report = "\n".join(
        [
            *events,
            *(ledger.summary() for ledger in ledgers),
            f"kills {kills}, unrecorded {unrecorded}",
        ]
    )
    print("\nscheduler under faults:\n" + report)
    one_second = ledgers[0]
    assert len(one_second.expected) >= duration * 0.8, report
    for ledger in ledgers:
        assert not ledger.missing, report
    duplicates = sum(sum(ledger.duplicates.values()) for ledger in ledgers)
    # A SIGKILL between a send and its record explains one duplicate per schedule at
    # most; a replica that lost its lease while sending says so in its log.
    assert duplicates <= unrecorded + kills * len(SCHEDULES), report
