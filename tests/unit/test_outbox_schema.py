"""The outbox table's name, SQL and shape check, without a database."""

from __future__ import annotations

import pytest

from leveret.outbox import OutboxSchemaError, migration_sql
from leveret.outbox.schema import COLUMNS, Table, check_shape, shape_error


class FakeDriverError(Exception):
    sqlstate = "42P01"


class Wrapped(Exception):
    """What SQLAlchemy raises: the driver's error in ``orig``."""

    def __init__(self, orig: BaseException) -> None:
        super().__init__(str(orig))
        self.orig = orig


@pytest.mark.parametrize(
    ("text", "sql"),
    [
        ("leveret_outbox", '"leveret_outbox"'),
        ("billing.outbox", '"billing"."outbox"'),
        ("_x1.Y_2", '"_x1"."Y_2"'),
    ],
)
def test_table_names_are_quoted(text: str, sql: str) -> None:
    assert Table.parse(text).sql == sql


@pytest.mark.parametrize("text", ["", "a.b.c", "drop table x", 'x"; --', "1abc", "a" * 64])
def test_unusable_table_names_are_refused(text: str) -> None:
    with pytest.raises(OutboxSchemaError, match=r"TABLE or SCHEMA\.TABLE"):
        Table.parse(text)


def test_the_migration_creates_every_column_the_check_wants() -> None:
    sql = migration_sql("billing.outbox")
    assert 'CREATE TABLE IF NOT EXISTS "billing"."outbox"' in sql
    assert 'CREATE INDEX IF NOT EXISTS "outbox_pending"' in sql
    for column in COLUMNS:
        assert f"\n    {column} " in sql


def test_the_shape_check_names_what_is_wrong_and_the_command() -> None:
    table = Table.parse("s.t")
    good = [(name, kind, not_null) for name, (kind, not_null) in COLUMNS.items()]
    check_shape(table, good)
    check_shape(table, [*good, ("tenant", "text", False)])  # a nullable column of its own
    with pytest.raises(OutboxSchemaError, match=r"does not exist.*--table s\.t"):
        check_shape(table, [])
    broken = [c for c in good if c[0] != "body"] + [("tenant", "text", True)]
    with pytest.raises(OutboxSchemaError) as caught:
        check_shape(table, broken)
    assert "column body is missing" in str(caught.value)
    assert "column tenant is NOT NULL" in str(caught.value)
    assert "leveret outbox migrate" in str(caught.value)


def test_insert_errors_of_the_table_become_ours_and_others_do_not() -> None:
    table = Table.parse("leveret_outbox")
    ours = shape_error(table, Wrapped(FakeDriverError('relation "leveret_outbox" does not exist')))
    assert isinstance(ours, OutboxSchemaError)
    assert "leveret outbox migrate --dsn DSN`" in str(ours)
    assert shape_error(table, ValueError("no sqlstate")) is None
