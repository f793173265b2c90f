"""Schedules for the scheduler tests, run by ``leveret scheduler tests.apps.schedules_app:app``.

No worker runs these tasks: the test reads what was fired straight from the queue,
where every confirmed send waits, so the queue itself is the ledger.
"""

from __future__ import annotations

from datetime import datetime

from leveret import App, Task
from leveret.scheduler import CatchUp, Schedules
from tests.support.models import Job

QUEUE = "ticks"

app = App(app_id="schedules-tests")
tick = Task("ticks.tick", Job, queue=QUEUE)

schedules = Schedules(app)
#: Every slot must fire, through kills and a broker restart: catch up on all of them.
schedules.every("tick-1s", tick, lambda slot: Job(n=int(slot.timestamp())), 1, missed=CatchUp(1000))
schedules.every("tick-5s", tick, Job(n=5), 5, missed=CatchUp(1000))
schedules.cron("nightly", tick, {"n": 0}, "30 2 * * *", timezone="Europe/Berlin")


def slot_of(task_id: str) -> tuple[str, datetime]:
    name, _, slot = task_id.partition("@")
    return name, datetime.fromisoformat(slot)
