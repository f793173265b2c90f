"""The operators' web dashboard: queues, dead letters grouped by cause, replay and
purge with live progress - ``leveret dashboard MODULE:APP``.

Install it with ``pip install 'leveret[dashboard]'``. Starlette, Jinja2 and htmx (one
vendored JavaScript file, served by the dashboard itself): no front-end build step,
nothing fetched from elsewhere. Modules: ``web`` (routes, HTML and JSON), ``groups``
(bounded background grouping), ``fingerprint`` (message shapes), ``jobs`` (replays and
purges in the background, through ``leveret.deadletter.DeadLetters``), ``queues``
(management API or passive declares), ``security`` (credentials, CSRF, read-only),
``settings``. See docs/dashboard.md.
"""

from leveret.dashboard.settings import DashboardSettings
from leveret.dashboard.web import create_app

__all__ = ["DashboardSettings", "create_app"]
