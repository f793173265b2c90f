"""An app for the queues page: a classic work queue (priorities, so the management API
gives the age of its oldest message) and a quorum one (which gives none)."""

from __future__ import annotations

from leveret import App, Task
from tests.support.models import Job

app = App(app_id="queues-tests")
app.queue("orders")
app.queue("ledger", type="quorum")
order = app.add(Task("queues.order", Job, queue="orders"))
entry = app.add(Task("queues.entry", Job, queue="ledger"))
