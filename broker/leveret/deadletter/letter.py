"""A dead letter as an operator sees it: what it was, why it died, read from any message.

Three kinds of message end up in a dead-letter queue:

- dead-lettered by a worker: ``leveret-reason``, the error's type, message and
  traceback, when and where it failed (``leveret.message.error_headers``);
- dead-lettered by RabbitMQ itself, most often a quorum queue's delivery limit
  after workers crashed on it: only ``x-death`` / ``x-first-death-reason`` say why;
- published by someone else: anything at all, perhaps without headers or JSON.

So every field here is optional, and reading a message never raises.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from leveret import message, retry
from leveret.amqp.types import Properties
from leveret.deadletter.codec import ExactProperties, properties_dict
from leveret.retry import DeadReason

#: What RabbitMQ writes in ``x-death`` as the reason, and what we call it.
BROKER_REASONS = {
    "delivery_limit": DeadReason.DELIVERY_LIMIT,
    "rejected": "rejected",
    "expired": "expired",
    "maxlen": "maxlen",
}

#: The reason of a message nothing says anything about (another publisher's).
UNKNOWN_REASON = "unknown"

#: Every reason a dead letter can be listed under: the worker's, RabbitMQ's, unknown.
REASONS = tuple(dict.fromkeys((*retry.REASONS, *BROKER_REASONS.values(), UNKNOWN_REASON)))

#: Headers that describe one death; a replayed copy starts without them.
DEATH_HEADERS = (
    message.REASON,
    message.ERROR_TYPE,
    message.ERROR_MESSAGE,
    message.TRACEBACK,
    message.FAILED_AT,
    message.WORKER,
    message.ORIGIN_QUEUE,
    message.LAST_ERROR,
    message.RETURNS,
)

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"

#: A body nested deeper than this is not shown as JSON. Python's JSON reader recurses
#: (a 100,000-level body raises RecursionError, though RabbitMQ and the worker take it
#: in their stride), and pretty-printed output grows with the square of the depth.
MAX_SHOWN_DEPTH = 100

#: Each entry of ``leveret-previous-errors`` is cut to this many characters, so that
#: twenty of them still fit in one AMQP header frame beside a traceback.
MAX_PREVIOUS_ERROR_CHARS = 500


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _epoch_ms(value: Any) -> datetime | None:
    try:
        ms = int(_text(value) or "")
        return datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True, eq=False)
class DeadLetter:
    """One message of a dead-letter queue with the facts about it that could be read."""

    queue: str
    body: bytes
    properties: Properties
    id: str
    task: str | None
    reason: str | None
    error_type: str | None
    error_message: str | None
    traceback: str | None
    failed_at: datetime | None
    worker: str | None
    attempts: int | None
    replays: int
    previous_errors: list[str] = field(default_factory=list)
    origin_queue: str | None = None

    @classmethod
    def parse(cls, queue: str, body: bytes, properties: Properties) -> DeadLetter:
        """Read a message from the dead-letter queue of ``queue`` (logical name)."""
        headers: Mapping[str, Any] = properties.headers or {}
        if not isinstance(headers, Mapping):
            headers = {}
        death = _last_death(headers)
        reason = _text(headers.get(message.REASON))
        failed_at = _epoch_ms(headers.get(message.FAILED_AT))
        origin = _text(headers.get(message.ORIGIN_QUEUE))
        if reason is None and death is not None:
            broker_reason = _text(death.get("reason")) or _text(headers.get("x-first-death-reason"))
            reason = BROKER_REASONS.get(broker_reason or "", broker_reason)
        if death is not None:
            failed_at = failed_at or _aware(death.get("time"))
            origin = origin or message_queue_name(_text(death.get("queue")))
        previous = headers.get(message.PREVIOUS_ERRORS)
        return cls(
            queue=queue,
            body=body,
            properties=properties,
            id=_text(properties.message_id) or _body_id(body),
            task=_text(properties.message_type),
            reason=reason,
            error_type=_text(headers.get(message.ERROR_TYPE)),
            error_message=_text(headers.get(message.ERROR_MESSAGE)),
            traceback=_text(headers.get(message.TRACEBACK)),
            failed_at=failed_at or _aware(properties.timestamp),
            worker=_text(headers.get(message.WORKER)),
            attempts=message.header_opt_int(headers, message.ATTEMPT),
            replays=max(message.header_int(headers, message.REPLAYS, 0), 0),
            previous_errors=[t for t in map(_text, previous) if t is not None]
            if isinstance(previous, list)
            else [],
            origin_queue=origin,
        )

    # -- reading --------------------------------------------------------------------

    @property
    def headers(self) -> dict[str, Any]:
        headers = self.properties.headers
        return dict(headers) if isinstance(headers, Mapping) else {}

    @property
    def error_name(self) -> str | None:
        """The exception's class name without its module."""
        if not self.error_type:
            return None
        return self.error_type.rsplit(".", 1)[-1]

    @property
    def kind(self) -> str:
        """What broke, for grouping: the exception type, else the reason in brackets."""
        if self.error_type:
            return self.error_type
        return f"({self.reason or UNKNOWN_REASON})"

    def describe(self) -> str:
        """``ErrorType: message``, the way retries record the last error."""
        if self.error_type:
            return f"{self.error_name}: {self.error_message or ''}".rstrip(": ")
        if self.reason in BROKER_REASONS.values():
            where = f" from {self.origin_queue}" if self.origin_queue else ""
            return f"{self.reason}: dead-lettered by RabbitMQ{where}"
        return self.reason or "unknown: no error recorded"

    def payload(self) -> Any:
        """The body as JSON, or None when it cannot be shown as JSON (see ``read_payload``)."""
        return self.read_payload()[0]

    def read_payload(self) -> tuple[Any, str | None]:
        """The body as JSON and None, or None and why it is not shown as JSON.

        Never raises: any message can be dead-lettered, so any message must be showable.
        """
        try:
            value = json.loads(self.body)
        except UnicodeDecodeError:
            return None, "not UTF-8"
        except ValueError:
            return None, "not JSON"
        except RecursionError:
            return None, f"nested too deeply (over {MAX_SHOWN_DEPTH} levels)"
        if _nested_deeper_than(value, MAX_SHOWN_DEPTH):
            return None, f"nested too deeply (over {MAX_SHOWN_DEPTH} levels)"
        return value, None

    def summary(self) -> dict[str, Any]:
        """The fields of a listing, as JSON-ready values."""
        return {
            "queue": self.queue,
            "task": self.task,
            "id": self.id,
            "attempts": self.attempts,
            "reason": self.reason,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "failed_at": self.failed_at.isoformat() if self.failed_at else None,
            "replays": self.replays,
            "previous_errors": self.previous_errors,
            "worker": self.worker,
            "origin_queue": self.origin_queue,
        }

    # -- copies we publish ----------------------------------------------------------

    def replay_properties(self, now_ms: int) -> ExactProperties:
        """Properties of the copy sent back to a work queue.

        Same task id, name, priority and trace headers; attempts start again at 1, the
        replay counter goes up, and this death joins the bounded error history.
        """
        headers = message.copy_headers(self.headers)
        for name in DEATH_HEADERS:
            headers.pop(name, None)
        history = [*self.previous_errors, self.describe()[:MAX_PREVIOUS_ERROR_CHARS]]
        headers[message.ATTEMPT] = 1
        headers[message.REPLAYS] = self.replays + 1
        headers[message.PREVIOUS_ERRORS] = history[-message.MAX_PREVIOUS_ERRORS :]
        headers[message.PUBLISHED_AT] = now_ms
        headers.setdefault(message.ENQUEUED_AT, now_ms)
        props = properties_dict(self.properties)
        props.pop("expiration", None)  # it would expire the copy in the work queue
        props["delivery_mode"] = message.PERSISTENT
        return publishable(props, headers, user=None)

    def kept_properties(self, user: str | None) -> ExactProperties:
        """Properties of the copy put back at the tail of the dead-letter queue.

        The message as it was, except the per-delivery ``x-delivery-count``. When only
        RabbitMQ's ``x-death`` says why it died, the reason, origin and time are also
        written as our own headers: RabbitMQ 4 does not interpret ``x-`` headers a
        client publishes, and may not keep them.
        """
        headers = self.headers
        headers.pop("x-delivery-count", None)
        if message.REASON not in headers and self.reason is not None:
            headers[message.REASON] = self.reason
            if self.origin_queue:
                headers.setdefault(message.ORIGIN_QUEUE, self.origin_queue)
            if self.failed_at is not None:
                headers.setdefault(message.FAILED_AT, int(self.failed_at.timestamp() * 1000))
        return publishable(properties_dict(self.properties), headers, user)


def publishable(
    props: dict[str, Any], headers: dict[str, Any], user: str | None
) -> ExactProperties:
    """Properties RabbitMQ accepts from us.

    No cluster_id (deprecated, refused), user_id only if it is ours (the broker checks
    it), and no direct reply-to address: that pseudo-queue lived on its requester's
    channel, long gone, and publishing to it closes ours.
    """
    props = dict(props)
    props.pop("cluster_id", None)
    if str(props.get("reply_to") or "").startswith(DIRECT_REPLY_TO):
        props.pop("reply_to")
    if props.get("user_id") is not None and props["user_id"] != user:
        props.pop("user_id")
    if props.get("delivery_mode") not in (None, 1, 2):
        props["delivery_mode"] = message.PERSISTENT
    return ExactProperties(headers=headers, **props)


def message_queue_name(amqp_name: str | None) -> str | None:
    """``<ns>.q.emails`` -> ``emails``; other names as they are."""
    if amqp_name and ".q." in amqp_name:
        return amqp_name.split(".q.", 1)[1]
    return amqp_name


def _last_death(headers: Mapping[str, Any]) -> Mapping[str, Any] | None:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]
    if "x-first-death-reason" in headers:
        return {
            "reason": headers.get("x-first-death-reason"),
            "queue": headers.get("x-first-death-queue"),
        }
    return None


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels (without recursing)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: list[Any] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > limit:
            return True
        stack.extend((child, level + 1) for child in children)
    return False


def _body_id(body: bytes) -> str:
    """An id for a message published without one: ``~`` and a digest of its body."""
    return "~" + hashlib.sha256(body).hexdigest()[:16]
