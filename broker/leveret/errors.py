"""The exceptions this package raises, each saying what to do next.

    LeveretError
    ├── ConfigError            settings or task definitions that cannot work
    │   └── OutboxSchemaError  the outbox table is missing or of the wrong shape
    ├── InvalidArgument        a priority, delay or time a send cannot use (a ValueError too)
    ├── BrokerUnavailable      no connection to RabbitMQ within the deadline
    ├── IncompatibleClient     the installed aiormq, aio-pika or pamqp changed shape
    ├── TopologyMismatch       a queue or exchange exists with other arguments
    ├── AccessRefused          the RabbitMQ user lacks a permission it needs
    ├── PublishError           a send that RabbitMQ did not take
    │   ├── NotConfirmed       nacked, timed out or cut off before the confirm
    │   ├── Unroutable         no queue is bound for the message
    │   ├── PayloadTooLarge    the body is over the size limit
    │   └── BulkPublishError   some of a send_many were not confirmed
    ├── TaskNotFound           no task of that name is registered
    ├── QueueNotFound          a work or dead-letter queue that does not exist
    ├── TaskTimeout            a task ran past its timeout (counts as a failed attempt)
    ├── DeliveryLimitReached   a task came back unsettled more often than its queue allows
    ├── PayloadInvalid         a payload that fails the task's model
    └── MalformedMessage       a delivery whose headers or encoding break the wire format

Handlers raise these to steer retries (see ``leveret.retry``):

    Retry(delay=...)           retry, after this delay rather than the policy's
    Permanent                  never retry: dead-letter now
"""

from __future__ import annotations

from datetime import timedelta


class LeveretError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(LeveretError):
    """A setting or a task definition that cannot work as given."""


class OutboxSchemaError(ConfigError):
    """The outbox table is missing or not of the shape ``leveret.outbox`` needs.

    The message names the migration to run (``leveret outbox migrate``).
    """


class InvalidArgument(LeveretError, ValueError):
    """An argument a call cannot use: a priority out of range, a negative delay, a naive time.

    Also a ``ValueError``, which these were before they joined this tree, so code that
    catches that keeps working.
    """


class BrokerUnavailable(LeveretError):
    """RabbitMQ did not answer within the connect deadline."""


class IncompatibleClient(LeveretError):
    """The installed aiormq, aio-pika or pamqp lacks a detail leveret relies on.

    Install the versions ``pyproject.toml`` allows (``pip install leveret`` does).
    """


class TopologyMismatch(LeveretError):
    """A queue or exchange already exists with arguments other than ours."""


class AccessRefused(LeveretError):
    """The RabbitMQ user lacks a permission (configure, write or read) it needs."""


class PublishError(LeveretError):
    """A message RabbitMQ did not take: it must not be treated as sent."""


class NotConfirmed(PublishError):
    """RabbitMQ nacked the message, or no confirm came before the deadline."""


class Unroutable(PublishError):
    """The message was returned: no queue is bound for its routing key."""


class PayloadTooLarge(PublishError):
    """The serialised payload is over the configured size limit."""


class BulkPublishError(PublishError):
    """Some messages of a ``send_many`` were not confirmed; ``sent`` lists those that were."""

    def __init__(self, sent: list[str], failed: list[tuple[int, BaseException]]) -> None:
        first = failed[0][1]
        super().__init__(
            f"{len(failed)} of {len(sent) + len(failed)} messages were not confirmed "
            f"(first: {type(first).__name__}: {first}); `.failed` holds (index, error) "
            "pairs to resend, `.sent` the confirmed task ids"
        )
        self.sent = sent
        self.failed = failed


class TaskNotFound(LeveretError):
    """No task is registered under that name."""


class QueueNotFound(LeveretError):
    """A work or dead-letter queue that does not exist on the broker."""


class TaskTimeout(LeveretError, TimeoutError):
    """A task ran past its timeout; the attempt counts as failed."""


class DeliveryLimitReached(LeveretError):
    """A task came back unsettled more often than its queue's delivery limit allows.

    Each time, the worker running it died or lost its connection before the task
    ended: a task that crashes its process (a segfault, running out of memory) stops
    here, dead-lettered with reason ``delivery-limit``, instead of crashing workers
    forever.
    """


class PayloadInvalid(LeveretError):
    """A payload that does not validate against the task's model."""


class MalformedMessage(LeveretError):
    """A delivery whose headers or ``content_encoding`` break the wire format.

    A worker dead-letters it with reason ``malformed``; fix the publisher, then
    replay it.
    """


class Retry(Exception):
    """Raised by a handler to be retried, optionally after a given delay.

    The attempt still counts against the task's ``max_attempts``. A delay longer than
    the delay ladder holds (about 497 days by default) is shortened to the longest it
    holds, with a warning in the log.
    """

    def __init__(self, reason: str = "", *, delay: timedelta | float | None = None) -> None:
        super().__init__(reason or "retry requested")
        if isinstance(delay, timedelta):
            delay = delay.total_seconds()
        if delay is not None and not delay >= 0:  # NaN fails this too
            raise InvalidArgument(
                f"Retry delay must be a number of seconds >= 0, got {delay}: "
                "pass delay=None to use the task's retry policy"
            )
        self.delay: float | None = delay


class Permanent(Exception):
    """Raised by a handler for a failure no retry can fix: dead-letter at once."""
