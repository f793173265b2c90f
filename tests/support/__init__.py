"""What tests share, in one place, so that one fix reaches every test that needs it.

- ``models``: the payload models several tests use (``Job``, ``Sleep``).
- ``waiting``: ``wait_for`` (and ``wait_until`` outside an event loop): waiting for a
  condition with a generous deadline, never for a fixed time.
- ``workers``: a worker in this event loop (``running``) or as a ``leveret worker``
  process (``start_worker``).
- ``processes``: the ``leveret`` command for subprocesses, and ``Output``, which reads
  what they print.
- ``amqp``: straight AMQP access beside the App: a fresh namespace, its teardown,
  queue sizes, publishing and peeking raw messages.
- ``deadletters``: dead letters as a worker writes them, and taking them back off.
- ``ops``: tests.apps.ops_app's worker started and ready (``start_ops_worker``), its
  health and metrics endpoints, and the ledger it writes.
- ``dashboard``: ``leveret dashboard`` served and ready (``serving``), and the Chromium
  the browser tests drive.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

#: The repository root: subprocesses of tests run from it, with it on PYTHONPATH, so
#: that they can import ``tests.apps`` as a worker would import a service's module.
ROOT = Path(__file__).resolve().parents[2]


def missing_service(how_to_get_one: str) -> NoReturn:
    """A service the test needs is not there: skip, saying how to get one; under
    ``CI=true`` fail instead, so that CI never passes by skipping."""
    if os.environ.get("CI") == "true":
        pytest.fail(how_to_get_one)
    pytest.skip(how_to_get_one)
