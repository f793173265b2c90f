"""The outbox table: its name, the SQL that creates it, and the check of its shape.

One table holds every task a service added inside its own transactions. Sent rows
stay (with ``sent_at``) until the relay's retention cleanup removes them, so an
operator can see what went out and when.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from leveret.errors import OutboxSchemaError

DEFAULT_TABLE = "leveret_outbox"

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

#: column -> (type as ``format_type`` prints it, NOT NULL)
COLUMNS: dict[str, tuple[str, bool]] = {
    "id": ("bigint", True),
    "task_id": ("text", True),
    "task": ("text", True),
    "queue": ("text", True),
    "body": ("bytea", True),
    "priority": ("smallint", True),
    "headers": ("jsonb", True),
    "deliver_at": ("timestamp with time zone", False),
    "created_at": ("timestamp with time zone", True),
    "attempts": ("integer", True),
    "retry_at": ("timestamp with time zone", False),
    "last_error": ("text", False),
    "sent_at": ("timestamp with time zone", False),
}

_MIGRATION = """\
-- The leveret outbox table; safe to run again (IF NOT EXISTS).
CREATE TABLE IF NOT EXISTS {table} (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id     text NOT NULL UNIQUE,   -- the message_id the relay publishes it with
    task        text NOT NULL,          -- the task's name (AMQP type)
    queue       text NOT NULL,
    body        bytea NOT NULL,         -- the payload's JSON, exactly as send() encodes it
    priority    smallint NOT NULL DEFAULT 0,
    headers     jsonb NOT NULL DEFAULT '{{}}',
    deliver_at  timestamptz,            -- a delayed task: not to run before this time
    created_at  timestamptz NOT NULL DEFAULT now(),
    attempts    integer NOT NULL DEFAULT 0,
    retry_at    timestamptz,            -- after a failed publish: not retried before this
    last_error  text,
    sent_at     timestamptz             -- set once RabbitMQ confirmed the message
);
CREATE INDEX IF NOT EXISTS {pending} ON {table} (id) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS {sent} ON {table} (sent_at) WHERE sent_at IS NOT NULL;
"""


@dataclass(frozen=True)
class Table:
    """An outbox table's name, optionally schema-qualified (``billing.leveret_outbox``)."""

    name: str
    schema: str | None = None

    @classmethod
    def parse(cls, text: str) -> Table:
        parts = text.split(".")
        if len(parts) > 2 or not all(_NAME.match(part) for part in parts):
            raise OutboxSchemaError(
                f"outbox table name {text!r} is not usable: give TABLE or SCHEMA.TABLE, "
                "each a plain identifier (letters, digits, underscores; at most 63)"
            )
        return cls(parts[-1], parts[0] if len(parts) == 2 else None)

    @property
    def sql(self) -> str:
        """The quoted name, for SQL text."""
        quoted = f'"{self.name}"'
        return f'"{self.schema}".{quoted}' if self.schema else quoted

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    def index(self, suffix: str) -> str:
        # An index lives in its table's schema: its name is never qualified.
        return f'"{self.name[: 63 - len(suffix) - 1]}_{suffix}"'

    def migration(self) -> str:
        """The SQL that creates this table and its indexes (idempotent)."""
        return _MIGRATION.format(
            table=self.sql, pending=self.index("pending"), sent=self.index("sent")
        )

    def how_to_migrate(self) -> str:
        flag = "" if self.display == DEFAULT_TABLE else f" --table {self.display}"
        return (
            f"run `leveret outbox migrate --dsn DSN{flag}` (or apply the SQL that "
            f"`leveret outbox migrate --print{flag}` prints with psql or your migration tool)"
        )


def migration_sql(table: str = DEFAULT_TABLE) -> str:
    """The outbox table's SQL, for psql or a migration tool (Alembic ``op.execute``,
    Django ``RunSQL``)."""
    return Table.parse(table).migration()


def migrate(dsn: str, table: str = DEFAULT_TABLE) -> None:
    """Create the outbox table unless it exists, then check its shape; safe to run again,
    and from several processes at once (replicas that each migrate on start)."""
    import psycopg

    parsed = Table.parse(table)
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        # Two CREATE TABLE IF NOT EXISTS at once: PostgreSQL lets one of them fail on
        # its catalog's unique index. An advisory lock for the transaction makes them
        # take turns.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"leveret {parsed.sql}",))
        conn.execute(parsed.migration())
        rows = conn.execute(SHAPE_QUERY, (parsed.sql,)).fetchall()
        check_shape(parsed, [(str(a), str(b), bool(c)) for a, b, c in rows])


#: Which columns a table has: name, ``format_type``, NOT NULL. ``to_regclass`` resolves
#: the name as a query would (search_path included) and is NULL for a missing table.
SHAPE_QUERY = """\
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
FROM pg_attribute a
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
"""


def check_shape(table: Table, columns: list[tuple[str, str, bool]]) -> None:
    """Raise ``OutboxSchemaError`` naming the migration unless ``columns`` fit."""
    if not columns:
        raise OutboxSchemaError(
            f"the outbox table {table.display} does not exist: {table.how_to_migrate()}"
        )
    found = {name: (kind, not_null) for name, kind, not_null in columns}
    problems = []
    for name, (kind, _) in COLUMNS.items():
        have = found.get(name)
        if have is None:
            problems.append(f"column {name} is missing")
        elif have[0] != kind:
            problems.append(f"column {name} is {have[0]}, not {kind}")
    for name, (_, not_null) in found.items():
        if name not in COLUMNS and not_null:
            problems.append(f"column {name} is NOT NULL but the outbox never fills it")
    if problems:
        raise OutboxSchemaError(
            f"the outbox table {table.display} is not of the shape leveret needs "
            f"({'; '.join(problems)}): rename or drop it, then {table.how_to_migrate()}"
        )


#: SQLSTATEs an INSERT raises on a missing table or one of the wrong shape.
SHAPE_SQLSTATES = frozenset(
    {
        "42P01",  # undefined_table
        "42703",  # undefined_column
        "42804",  # datatype_mismatch
        "23502",  # not_null_violation (a column of its own the outbox never fills)
    }
)


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a psycopg error, or of the driver error SQLAlchemy wraps."""
    for candidate in (exc, getattr(exc, "orig", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def shape_error(table: Table, exc: BaseException) -> OutboxSchemaError | None:
    """Our error for an INSERT that failed because of the table, else None."""
    if sqlstate(exc) not in SHAPE_SQLSTATES:
        return None
    first = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    return OutboxSchemaError(
        f"adding to the outbox table {table.display} failed ({first}): the table is "
        f"missing or not of the shape leveret needs; {table.how_to_migrate()}"
    )
