"""A worker app whose lethal doses kill its own process: a crash loop to be stopped.

The same task on a quorum queue (``poison``, where RabbitMQ counts deliveries) and a
classic one (``poison-classic``, where the worker does), both with delivery limit 2.
``TEST_LEDGER`` records each run.
"""

from __future__ import annotations

import os
import time

from pydantic import BaseModel

from leveret import App, Task, TaskContext


class Dose(BaseModel):
    lethal: bool
    ms: int = 0


dose = Task("poison.dose", Dose, queue="poison")
classic_dose = Task("poison.classic_dose", Dose, queue="poison-classic")

app = App(app_id="poison-tests")
app.queue("poison", type="quorum", delivery_limit=2)
app.queue("poison-classic", type="classic", delivery_limit=2)


@app.handle(dose)
@app.handle(classic_dose)
def take(payload: Dose, ctx: TaskContext) -> None:
    with open(os.environ["TEST_LEDGER"], "a", encoding="utf-8") as ledger:
        ledger.write(f"{ctx.task_id} {int(payload.lethal)} {ctx.delivery_count}\n")
    if payload.lethal:
        os._exit(3)  # like an OOM kill: no exception, no cleanup
    time.sleep(payload.ms / 1000)
    with open(os.environ["TEST_LEDGER"], "a", encoding="utf-8") as ledger:
        ledger.write(f"{ctx.task_id} done {ctx.delivery_count}\n")
