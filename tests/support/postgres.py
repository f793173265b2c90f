"""Finding a PostgreSQL for the tests, and a schema of its own for each test run.

In order: ``POSTGRES_URL`` (or ``DATABASE_URL``) if set; one answering on
127.0.0.1:5432 (database ``test``, trust auth, as on the development and CI machines).
None found: the test is skipped with how to get one, except under ``CI=true``, where it
fails (a CI run must not pass by skipping).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from leveret.ops.discovery import port_open

DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"

HOW_TO_GET_ONE = (
    "No PostgreSQL found. Set POSTGRES_URL=postgresql://user@host:5432/db, or start one "
    "locally (Debian/Ubuntu: `apt-get install postgresql && pg_ctlcluster --skip-systemctl-"
    "redirect $(ls /etc/postgresql) main start`, with a database `test` the user may use)."
)


def find_postgres() -> str:
    """A PostgreSQL URL that answers, or skip (fail under CI) saying how to get one."""
    url = os.environ.get("POSTGRES_URL") or os.environ.get("DATABASE_URL")
    if url:
        return url
    if port_open("127.0.0.1", 5432):
        return DEFAULT
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(HOW_TO_GET_ONE)
    pytest.skip(HOW_TO_GET_ONE)


@contextlib.contextmanager
def fresh_schema(url: str, prefix: str = "t") -> Iterator[str]:
    """A schema no other test run uses, dropped with all it holds afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')
