"""leveret: typed background tasks on RabbitMQ.

Confirmed publishing, ack after completion, retries with backoff by the broker
itself, and dead letters an operator can inspect and replay.
"""

from leveret.app import App
from leveret.errors import (
    AccessRefused,
    BrokerUnavailable,
    BulkPublishError,
    ConfigError,
    InvalidArgument,
    LeveretError,
    MalformedMessage,
    NotConfirmed,
    PayloadInvalid,
    PayloadTooLarge,
    Permanent,
    PublishError,
    Retry,
    TaskNotFound,
    TaskTimeout,
    TopologyMismatch,
    Unroutable,
)
from leveret.middleware import Middleware, Outcome
from leveret.retry import NO_RETRY, RetryPolicy
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
