"""The app an outbox relay process loads in tests: one task contract on queue ``outbox``.

``leveret outbox relay tests.apps.outbox_app:app`` builds it from the environment
(LEVERET_URL, LEVERET_NAMESPACE); tests add rows for ``job`` with their own App.
"""

from __future__ import annotations

from leveret import App, Task
from tests.support.models import Job

QUEUE = "outbox"

job = Task("outbox.job", Job, queue=QUEUE)

app = App(app_id="outbox-relay")
app.add(job)
