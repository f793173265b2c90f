"""Apps for ``leveret doctor`` tests: ``app`` is healthy once declared; ``plain`` gives
priorities to a quorum queue that cannot honour them."""

from __future__ import annotations

from leveret import App, Task
from tests.support.models import Job

app = App(app_id="doctor-tests")
app.queue("doc-classic")
app.queue("doc-banded", type="quorum", priority_bands=(5,))
urgent = app.add(Task("doctor.urgent", Job, queue="doc-classic", priority=9))
banded = app.add(Task("doctor.banded", Job, queue="doc-banded", priority=7))

plain = App(app_id="doctor-tests")
plain.queue("doc-plain", type="quorum")
ignored = plain.add(Task("doctor.ignored", Job, queue="doc-plain", priority=9))
