"""leveret: typed background tasks on RabbitMQ.

Confirmed publishing, ack after completion, retries with backoff by the broker
itself, and dead letters an operator can inspect and replay.

The names below are the public API. Of the modules, ``leveret.deadletter`` (dead-letter
operations), ``leveret.ops.sentry`` (``SentryMiddleware``), ``leveret.ops.health``
(``HealthServer``), ``leveret.ops.logs``
(``TaskLog``), ``leveret.ops.metrics`` (``Metrics``), ``leveret.ops.discovery``
(``find_broker``), ``leveret.testing`` (``Kit``, ``BrokerKit``, the pytest plugin),
``leveret.integrations.django`` (``send_on_commit``), ``leveret.outbox`` (``Outbox``,
``Relay``, ``migration_sql``; the ``outbox`` extra) and ``leveret.scheduler`` (recurring
tasks) are public too; ``App.sync`` is ``leveret.sync.SyncSender``. Everything else is
internal and may change.
"""

from leveret._version import __version__ as __version__
from leveret.app import App
from leveret.errors import (
    AccessRefused,
    BrokerUnavailable,
    BulkPublishError,
    ConfigError,
    DeliveryLimitReached,
    InvalidArgument,
    LeveretError,
    MalformedMessage,
    NotConfirmed,
    PayloadInvalid,
    PayloadTooLarge,
    Permanent,
    PublishError,
    QueueNotFound,
    Retry,
    TaskNotFound,
    TaskTimeout,
    TopologyMismatch,
    Unroutable,
)
from leveret.middleware import Middleware, Outcome
from leveret.retry import NO_RETRY, DeadReason, RetryPolicy
from leveret.settings import Settings
from leveret.task import Task, TaskContext
from leveret.worker import Worker

__all__ = [
    "NO_RETRY",
    "AccessRefused",
    "App",
    "BrokerUnavailable",
    "BulkPublishError",
    "ConfigError",
    "DeadReason",
    "DeliveryLimitReached",
    "InvalidArgument",
    "LeveretError",
    "MalformedMessage",
    "Middleware",
    "NotConfirmed",
    "Outcome",
    "PayloadInvalid",
    "PayloadTooLarge",
    "Permanent",
    "PublishError",
    "QueueNotFound",
    "Retry",
    "RetryPolicy",
    "Settings",
    "Task",
    "TaskContext",
    "TaskNotFound",
    "TaskTimeout",
    "TopologyMismatch",
    "Unroutable",
    "Worker",
]
