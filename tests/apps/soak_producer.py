"""The soak test's producer: a process of its own, so that what it holds is measured
apart from the test that judges it.

``python -m tests.apps.soak_producer`` sends tests.apps.faults_app's job for
``SOAK_SECONDS`` at ``SOAK_RATE`` a second, a mix by task number:

    ok      (12 in 20)  succeed after 0-180 ms of work
    retry   (2 in 20)   fail twice, then succeed: two trips through the delay levels
    delay   (4 in 20)   sent with a delay of 0.5-5.4 s (one of them also fails once)
    dead    (1 in 20)   fail every attempt: dead-lettered
    replay  (1 in 20)   fail every attempt until replayed from the dead letters

Every confirmed send is a ``sent <id> <kind>`` line in the ledger (``FAULTS_LEDGER``,
tests/faults/ledger.py); a send the broker never confirmed, after ten tries with the
same id, is an ``unsent`` line. Every ``SOAK_EVERY`` seconds it appends a sample of
itself to ``SOAK_SAMPLES`` (tests/faults/soak.py reads them). The broker and the
namespace come from the ``LEVERET_*`` environment, as for the workers.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from leveret import App
from tests.apps.faults_app import Job, build, job
from tests.faults.ledger import append_line
from tests.faults.soak import Sample

SENDERS = 8
RESENDS = 10


def kind_of(n: int) -> tuple[str, dict[str, Any], float | None]:
    """What task ``n`` does: its kind, its job arguments, and its delay in seconds."""
    slot = n % 20
    if slot < 12:
        return "ok", {"ms": (n % 10) * 20}, None
    if slot < 14:
        return "retry", {"fail": 2}, None
    if slot < 18:
        return "delay", {"fail": 1 if slot == 17 else 0}, 0.5 + (n % 50) / 10
    if slot == 18:
        return "dead", {"fail": 99}, None
    return "replay", {"fail": 99, "heal_on_replay": True}, None


async def send_one(app: App, ledger: str, namespace: str, n: int) -> None:
    kind, args, delay = kind_of(n)
    task_id = f"{namespace}-{n:07d}"
    error = ""
    for _ in range(RESENDS):
        try:
            await app.send(job, Job(n=n, **args), task_id=task_id, delay=delay)
        except Exception as exc:
            error = type(exc).__name__
            await asyncio.sleep(0.5)
        else:
            append_line(ledger, f"sent {task_id} {kind}")
            return
    append_line(ledger, f"unsent {task_id} {error}")


async def sample_every(seconds: float, path: str) -> None:
    while True:
        append_line(path, Sample.of_this_process("producer").line())
        await asyncio.sleep(seconds)


async def main() -> None:
    env = os.environ
    ledger, samples = env["FAULTS_LEDGER"], env["SOAK_SAMPLES"]
    seconds, rate = float(env["SOAK_SECONDS"]), float(env["SOAK_RATE"])
    app = build()
    namespace = app.settings.namespace
    await app.declare()
    sampler = asyncio.create_task(sample_every(float(env.get("SOAK_EVERY", "10")), samples))
    start = time.monotonic()
    total = int(seconds * rate)
    numbers = iter(range(total))

    async def sender() -> None:
        for n in numbers:
            wait = start + n / rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await send_one(app, ledger, namespace, n)

    try:
        await asyncio.gather(*(sender() for _ in range(SENDERS)))
    finally:
        sampler.cancel()
        await app.close()


if __name__ == "__main__":
    asyncio.run(main())
