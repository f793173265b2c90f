"""One fault scenario: its namespace, ledger, producer, workers, and the verdict.

A test builds a ``Scenario`` (fixture ``make_scenario``), starts workers, sends jobs
with ``produce`` while it injects faults, waits with ``settle`` until everything
confirmed has completed (or reached the dead-letter queue where that is allowed),
and asserts on ``verdict`` - counted from the ledger, not from the broker.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiormq

from leveret import App, Settings
from leveret.amqp.topology import Names
from tests.apps.faults_app import QUEUE, Job, build, job
from tests.faults.ledger import Ledger, Verdict
from tests.faults.workers import Workers
from tests.support.amqp import admin_channel

FULL = os.environ.get("LEVERET_FAULTS_FULL") == "1"

#: Verdicts of this session, printed as a table at the end (conftest.py).
RESULTS: list[Verdict] = []


def size(fast: int, full: int) -> int:
    """A scenario's size: small for ``make test``, full for ``make test-faults``."""
    return full if FULL else fast


def span(fast: float, full: float) -> float:
    """A fault's duration in seconds, in the same way."""
    return full if FULL else fast


class Hung(Exception):
    """A send neither returned nor raised long after its deadline."""


class LeakedCancel(Exception):
    """A send raised CancelledError at a caller that was not being cancelled."""


@dataclass(frozen=True)
class Dead:
    """A message found in the dead-letter queue."""

    task_id: str
    headers: dict[str, Any]
    body: bytes

    @property
    def reason(self) -> str | None:
        value = self.headers.get("leveret-reason")
        if value is None:
            value = self.headers.get("x-first-death-reason")
        return value.decode() if isinstance(value, bytes) else value


@dataclass
class Scenario:
    """Everything one scenario owns; ``close`` removes it all."""

    name: str
    settings: Settings
    admin_url: str
    tmp: Path
    app_options: dict[str, Any] = field(default_factory=dict)
    worker_env: dict[str, str] = field(default_factory=dict)
    concurrency: int = 8
    shutdown_timeout: float = 10.0

    def __post_init__(self) -> None:
        self.names = Names(self.settings.namespace)
        self.ledger = Ledger(self.tmp / "ledger.txt")
        self.app: App = build(self.settings, **self.app_options)
        env = settings_env(self.settings)
        env.update(self.worker_env)
        env["FAULTS_LEDGER"] = str(self.ledger.path)
        for key, value in self.app_options.items():
            env[f"FAULTS_{key.upper()}"] = str(value)
        logdir = self.tmp / "logs"
        logdir.mkdir(exist_ok=True)
        self.workers = Workers(env, logdir, self.concurrency, self.shutdown_timeout)
        self.sends_in_flight = 0
        #: Everything taken out of the dead-letter queue so far, by task id.
        self.dead: dict[str, Dead] = {}

    # -- setting up -----------------------------------------------------------------

    async def declare(self) -> None:
        await self.app.declare([QUEUE])

    # -- producing --------------------------------------------------------------------

    def task_id(self, n: int) -> str:
        return f"{self.settings.namespace}-{n:07d}"

    async def send(self, n: int, resend: int = 0, **job_args: Any) -> bool:
        """Send one job; on an error, send it again (same id) up to ``resend`` times.

        Every attempt is recorded in the ledger. True once one was confirmed.
        """
        task_id = self.task_id(n)
        hard_limit = self.settings.publish_deadline + self.settings.confirm_timeout + 30
        for attempt in range(resend + 1):
            started = time.time()
            self.sends_in_flight += 1
            try:
                await asyncio.wait_for(
                    self.app.send(job, Job(n=n, **job_args), task_id=task_id), hard_limit
                )
            except TimeoutError:
                self.ledger.sent(task_id, started, Hung(f"no answer in {hard_limit:.0f} s"))
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                self.ledger.sent(task_id, started, LeakedCancel())
            except Exception as exc:
                self.ledger.sent(task_id, started, exc)
            else:
                self.ledger.sent(task_id, started)
                return True
            finally:
                self.sends_in_flight -= 1
            if attempt < resend:
                await asyncio.sleep(0.2)
        return False

    async def produce(
        self,
        jobs: Iterable[tuple[int, dict[str, Any]]],
        *,
        concurrency: int = 8,
        rate: float | None = None,
        resend: int = 10,
    ) -> None:
        """Send ``(n, job arguments)`` pairs, ``concurrency`` at a time, paced to ``rate``/s."""
        pending = list(jobs)
        queue: asyncio.Queue[tuple[int, tuple[int, dict[str, Any]]]] = asyncio.Queue()
        for i, item in enumerate(pending):
            queue.put_nowait((i, item))
        start = time.monotonic()

        async def sender() -> None:
            while not queue.empty():
                i, (n, args) = queue.get_nowait()
                if rate:
                    delay = start + i / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await self.send(n, resend=resend, **args)

        await asyncio.gather(*(sender() for _ in range(concurrency)))

    def produce_in_background(
        self, count: int, *, rate: float, ms: int = 0, concurrency: int = 8, resend: int = 10
    ) -> asyncio.Task[None]:
        return asyncio.create_task(
            self.produce(
                ((n, {"ms": ms}) for n in range(count)),
                rate=rate,
                concurrency=concurrency,
                resend=resend,
            )
        )

    # -- waiting and judging ------------------------------------------------------------

    async def settle(self, within: float, *, dead: int = 0) -> None:
        """Wait until every queued task completed or was dead-lettered, and at least
        ``dead`` were dead-lettered (which, where, is for the test to judge)."""
        deadline = time.monotonic() + within
        while True:
            missing = (self.ledger.confirmed | self.ledger.expected) - set(self.ledger.completed())
            if missing or len(self.dead) < dead:
                await self.dead_letters()
                missing -= set(self.dead)
            if not missing and len(self.dead) >= dead:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(missing)} tasks neither completed nor dead-lettered within "
                    f"{within:.0f} s (first: {sorted(missing)[:5]}); "
                    f"{self.ledger.verdict(self.name, dead=set(self.dead))}"
                )
            await asyncio.sleep(0.5)

    async def dead_count(self) -> int:
        """Messages in the dead-letter queue now (not yet taken out)."""
        async with admin_channel(self.admin_url) as channel:
            ok = await channel.queue_declare(self.names.dead_queue(QUEUE), passive=True)
            return int(ok.message_count or 0)

    async def dead_letters(self) -> list[Dead]:
        """Take what is in the dead-letter queue out; return all taken so far."""
        async with admin_channel(self.admin_url) as channel:
            name = self.names.dead_queue(QUEUE)
            while True:
                got = await channel.basic_get(name, no_ack=True)
                if got.delivery is None or isinstance(got.delivery, aiormq.spec.Basic.GetEmpty):
                    break
                props = got.header.properties
                letter = Dead(props.message_id or "", dict(props.headers or {}), got.body)
                self.dead.setdefault(letter.task_id, letter)
        return list(self.dead.values())

    def verdict(self, *, dead: set[str] | None = None, record: bool = True) -> Verdict:
        verdict = self.ledger.verdict(self.name, dead=dead)
        if record:
            RESULTS.append(verdict)
        print(verdict)
        return verdict

    def send_errors(self) -> set[str]:
        return {s.error for s in self.ledger.sends if s.error is not None}

    async def close(self) -> None:
        await self.workers.close()
        await self.app.close()


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``LEVERET_*`` variables that give a worker process the same settings."""
    env = {}
    for name in settings.model_fields_set:
        env[f"LEVERET_{name.upper()}"] = str(getattr(settings, name))
    return env
