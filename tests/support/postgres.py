"""Finding PostgreSQL for the outbox tests, the way the engine finds RabbitMQ:

1. ``LEVERET_TEST_POSTGRES_URL`` if set;
2. a server answering on 127.0.0.1:5432 (database ``test``, user ``postgres``, trust);
3. a throwaway cluster from a local install (``initdb``), on a free port in a temp dir
   (not as root: PostgreSQL refuses to run as root).

None found: the tests that need one skip, saying how to get one; under ``CI=true``
they fail instead. Each test gets a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from leveret.ops.discovery import free_port
from leveret.outbox import migration_sql
from tests.support.amqp import fresh_namespace

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"

HOW_TO_GET_ONE = (
    "No PostgreSQL found for the outbox tests. Set LEVERET_TEST_POSTGRES_URL="
    "postgresql://user@host:5432/db, or install and start one (Debian/Ubuntu: "
    "`apt-get install postgresql && pg_ctlcluster --skip-systemctl-redirect "
    "$(ls /etc/postgresql) main start`, then `createdb test`); .ci/run does this."
)


def answers(url: str) -> bool:
    with contextlib.suppress(psycopg.Error), psycopg.connect(url, connect_timeout=3):
        return True
    return False


@dataclass
class Found:
    url: str
    base: Path | None = None
    _bin: Path | None = field(default=None, repr=False)

    def close(self) -> None:
        if self.base is None or self._bin is None:
            return
        subprocess.run(
            [str(self._bin / "pg_ctl"), "-D", str(self.base / "data"), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.base, ignore_errors=True)


def find_postgres() -> Found | None:
    """A PostgreSQL the tests may create schemas in, or None."""
    url = os.environ.get("LEVERET_TEST_POSTGRES_URL")
    if url:
        return Found(url)
    if answers(DEFAULT_URL):
        return Found(DEFAULT_URL)
    return _local_cluster()


def _local_cluster() -> Found | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = shutil.which("initdb") or (found[-1] if found else None)
    if initdb is None or os.geteuid() == 0:
        return None
    bindir = Path(initdb).parent
    base = Path(tempfile.mkdtemp(prefix="leveret-pg-"))
    port = free_port()
    data = base / "data"
    run = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
    if subprocess.run(run, capture_output=True, check=False).returncode:
        shutil.rmtree(base, ignore_errors=True)
        return None
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1"
    start = [str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l"]
    subprocess.run([*start, str(base / "log"), "start"], capture_output=True, check=False)
    admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    if not answers(admin):
        shutil.rmtree(base, ignore_errors=True)
        return None
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE test")
    return Found(f"postgresql://postgres@127.0.0.1:{port}/test", base, bindir)


def create_outbox(url: str, *, table: str = "leveret_outbox") -> str:
    """A fresh schema holding an outbox table; its qualified name."""
    schema = fresh_namespace("ob")
    qualified = f"{schema}.{table}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(migration_sql(qualified))
    return qualified


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@contextlib.contextmanager
def fresh_schema(url: str, prefix: str = "t") -> Iterator[str]:
    """A schema no other test run uses, dropped with all it holds afterwards."""
    name = f"{prefix}_{fresh_namespace()}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        drop_schema(url, name)
