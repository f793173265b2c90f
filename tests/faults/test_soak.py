"""Soak: a mixed workload for minutes, a worker SIGKILLed every minute; nothing is lost
and nothing a worker or a producer holds keeps growing.

Three minutes in ``make test``; ``make soak`` runs it for 30 (``LEVERET_SOAK_SECONDS``).
Two worker processes consume: one runs the whole time and is the one measured (through
its ``/metrics``: ``process_resident_memory_bytes``, ``process_open_fds``,
``leveret_event_loop_tasks``); the other is SIGKILLed every minute and started again,
so the measured one lives through the redeliveries, the takeovers and the reconnects
of its peer. The producer (tests/apps/soak_producer.py) is a process of its own and
samples itself. Once a minute, offset from the kills, ``leveret dlq replay`` sends the
tasks that were meant to heal on replay back to their queue. The verdict is the
ledger's (tests/faults/ledger.py) and tests/faults/soak.py's.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from leveret.ops.discovery import free_port
from tests.faults.ledger import append_line
from tests.faults.scenario import Scenario, settings_env
from tests.faults.soak import HEADER, Sample, judge, read_samples, timeline
from tests.faults.workers import APP, WorkerProc
from tests.support import ROOT
from tests.support.ops import metric, scrape, wait_status
from tests.support.processes import cli, leveret_env

SECONDS = float(os.environ.get("LEVERET_SOAK_SECONDS", "180"))
RATE = float(os.environ.get("LEVERET_SOAK_RATE", "20"))
EVERY = 10.0
KILL_EVERY = 60.0
#: Left out of the judgement: a minute, or the first sixth of a long run.
WARMUP = max(60.0, SECONDS / 6)
#: Where the run's tables go (``make soak`` puts them beside docs/soak.md).
REPORT = Path(os.environ.get("LEVERET_SOAK_REPORT", str(ROOT / ".pytest_cache" / "soak.md")))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SECONDS + 900)]


async def sample_worker(port: int, pid: int, path: Path) -> None:
    """The measured worker's own figures, from its scrape, every ``EVERY`` seconds."""
    while True:
        text = await scrape(port)
        sample = Sample(
            "worker",
            pid,
            time.time(),
            int(metric(text, "process_resident_memory_bytes")),
            int(metric(text, "process_open_fds")),
            int(metric(text, "leveret_event_loop_tasks")),
            os.getloadavg()[0],
        )
        append_line(str(path), sample.line())
        await asyncio.sleep(EVERY)


async def kill_every_minute(scenario: Scenario, steady: WorkerProc) -> None:
    """SIGKILL the other worker each minute; the scenario's supervisor starts another."""
    while True:
        await asyncio.sleep(KILL_EVERY)
        for worker in scenario.workers.alive:
            if worker is not steady:
                scenario.workers.kill(worker)


async def replay(scenario: Scenario, url: str) -> str:
    """``leveret dlq replay`` of the tasks that heal on replay; its output."""
    done = await asyncio.to_thread(
        cli,
        url,
        scenario.settings.namespace,
        "dlq",
        "replay",
        "--app",
        APP,
        "--match",
        "until replayed",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def replay_every_minute(scenario: Scenario, url: str) -> None:
    await asyncio.sleep(KILL_EVERY / 2)
    while True:
        await replay(scenario, url)
        await asyncio.sleep(KILL_EVERY)


def start_producer(scenario: Scenario, samples: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **settings_env(scenario.settings),
        "FAULTS_LEDGER": str(scenario.ledger.path),
        "SOAK_SAMPLES": str(samples),
        "SOAK_SECONDS": str(SECONDS),
        "SOAK_RATE": str(RATE),
        "SOAK_EVERY": str(EVERY),
    }
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.apps.soak_producer"],
            env=leveret_env(extra=env),
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def write_report(text: str) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(text + "\n")
    print(text)


async def test_soak(amqp_url: str, make_scenario: Callable[..., Scenario], tmp_path: Path) -> None:
    scenario = make_scenario(amqp_url, worker_env={"LEVERET_HEALTH_PORT": "0"})
    await scenario.declare()
    samples = tmp_path / "samples.txt"
    samples.touch()
    port = free_port()
    steady = scenario.workers.spawn("--health-port", str(port))
    scenario.workers.spawn()
    await scenario.workers.wait_ready()
    await wait_status(port, "/readyz", 200)
    scenario.workers.supervise(keep=2)

    started = time.time()
    producer = start_producer(scenario, samples, tmp_path / "producer.log")
    background = [
        asyncio.create_task(sample_worker(port, steady.pid, samples)),
        asyncio.create_task(kill_every_minute(scenario, steady)),
        asyncio.create_task(replay_every_minute(scenario, amqp_url)),
    ]
    try:
        while producer.poll() is None:
            assert steady.alive, f"the measured worker died:\n{steady.output()[-3000:]}"
            for task in background:
                if task.done():
                    task.result()  # a sampler or the replays failed: say why
            await asyncio.sleep(1.0)
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if producer.poll() is None:
            producer.kill()
            producer.wait()
    ended = time.time()
    log = (tmp_path / "producer.log").read_text(errors="replace")
    assert producer.returncode == 0, f"the producer failed:\n{log[-3000:]}"
    unsent = [line for line in scenario.ledger.path.read_text().splitlines() if "unsent" in line]
    assert not unsent, f"sends never confirmed: {unsent[:5]}"

    # What was meant to heal on replay is replayed until it has completed; then every
    # other task has either completed or is in the dead-letter queue.
    published = scenario.ledger.published()
    scenario.ledger.expected |= set(published)
    heal = {task_id for task_id, kind in published.items() if kind == "replay"}
    deadline = time.monotonic() + 300
    while missing := heal - set(scenario.ledger.completed()):
        assert time.monotonic() < deadline, f"{len(missing)} never completed after replays"
        await replay(scenario, amqp_url)
        await asyncio.sleep(5)
    doomed = {task_id for task_id, kind in published.items() if kind == "dead"}
    await scenario.settle(within=300, dead=len(doomed))

    verdict = scenario.verdict(dead=set(scenario.dead))
    judgements = [
        judge(who, [s for s in read_samples(samples) if s.who == who], started + WARMUP)
        for who in ("worker", "producer")
    ]
    runs = scenario.ledger.runs_by_task()
    redelivered = sum(r.redelivered for task_runs in runs.values() for r in task_runs)
    load = os.getloadavg()
    report = "\n\n".join(
        [
            f"{SECONDS / 60:.0f} min at {RATE:g} tasks/s, warm-up {WARMUP:.0f} s, "
            f"{len(scenario.workers.kills)} worker SIGKILLs, {redelivered} redelivered runs, "
            f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
            f"({os.cpu_count()} CPUs)",
            str(verdict),
            HEADER + "\n" + "\n".join(j.row() for j in judgements),
            timeline(read_samples(samples), started),
        ]
    )
    write_report(report)

    assert not verdict.lost, verdict
    assert set(scenario.dead) == doomed, "only the tasks meant to fail every time are dead"
    assert len(scenario.workers.kills) >= int((ended - started) // KILL_EVERY) - 1
    failures = [f for j in judgements for f in j.failures()]
    assert not failures, "\n".join(failures)
