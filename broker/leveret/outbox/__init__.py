"""The transactional outbox on PostgreSQL: tasks written in the service's own transaction,
published by a relay once committed.

    from leveret.outbox import Outbox

    outbox = Outbox(app)                       # table leveret_outbox by default
    with psycopg.connect(dsn) as conn:         # or a SQLAlchemy Session / Connection
        conn.execute("INSERT INTO orders ...")
        outbox.add(conn, send_receipt, Receipt(order_id=42))
    # committed: `leveret outbox relay --dsn DSN myservice.tasks:app` publishes it

Create the table with ``leveret outbox migrate --dsn DSN``, ``migrate(dsn)``, or the
SQL of ``migration_sql()``. Needs the ``outbox`` extra (``pip install 'leveret[outbox]'``).
"""

from leveret.errors import OutboxSchemaError
from leveret.outbox.metrics import RelayMetrics
from leveret.outbox.relay import Relay
from leveret.outbox.schema import DEFAULT_TABLE, migrate, migration_sql
from leveret.outbox.writer import Outbox

__all__ = [
    "DEFAULT_TABLE",
    "Outbox",
    "OutboxSchemaError",
    "Relay",
    "RelayMetrics",
    "migrate",
    "migration_sql",
]
