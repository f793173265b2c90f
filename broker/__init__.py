"""leveret: typed background tasks on RabbitMQ.

Confirmed publishing, ack after completion, retries with backoff by the broker
itself, and dead letters an operator can inspect and replay.
"""

from broker.app import App
from broker.errors import (
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
from broker.middleware import Middleware, Outcome
from broker.retry import NO_RETRY, RetryPolicy
from broker.settings import Settings
from broker.task import Task, TaskContext
from broker.worker import Worker

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
