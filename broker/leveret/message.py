"""The wire format: one AMQP message per task, metadata in properties and headers.

The body is the task's arguments as JSON. A service in any language can publish a
task with plain AMQP: ``type`` names the task, ``message_id`` is the task id, and
the optional ``leveret-*`` headers below carry what retries and dead letters need.
The README documents this contract; keep the two in step.
"""

from __future__ import annotations

import hashlib
import time
import traceback
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from leveret.amqp import Properties

CONTENT_TYPE = "application/json"
PERSISTENT = 2

# Set by producers (all optional for foreign publishers).
ATTEMPT = "leveret-attempt"  # int, 1 on the first run
ENQUEUED_AT = "leveret-enqueued-at"  # int, epoch ms of the first send, kept across retries
PUBLISHED_AT = "leveret-published-at"  # int, epoch ms of this copy's publish
REPLAYS = "leveret-replays"  # int, times replayed from the dead-letter queue
# Set on a copy a worker put back in the queue instead of running it.
RETURNS = "leveret-returns"  # int, unsettled returns before this copy (x-delivery-count)
DELIVERY_COUNT = "x-delivery-count"  # set by quorum queues on a redelivery
# Set on retry copies.
LAST_ERROR = "leveret-last-error"  # str, "ErrorType: message" of the previous attempt
# Set on dead letters.
REASON = "leveret-reason"  # str, see DeadReason
ERROR_TYPE = "leveret-error-type"
ERROR_MESSAGE = "leveret-error-message"
TRACEBACK = "leveret-traceback"
FAILED_AT = "leveret-failed-at"  # int, epoch ms
WORKER = "leveret-worker"  # str, host:pid
ORIGIN_QUEUE = "leveret-queue"  # str, the logical queue it came from
PREVIOUS_ERRORS = "leveret-previous-errors"  # list[str], errors of earlier lives (replays)


#: Headers RabbitMQ adds while dead-lettering. A copy we publish must not carry them:
#: with ``x-death`` the broker's cycle detection silently drops the copy the second
#: time it passes a delay level.
BROKER_HEADERS = frozenset(
    {
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
    }
)

#: The highest ``leveret-attempt`` a worker accepts; ``RetryPolicy.max_attempts`` is
#: bounded by it too. A header outside 1..MAX_ATTEMPT is malformed, never extra runs.
MAX_ATTEMPT = 10_000

#: ``content_encoding`` values whose body is plain JSON: none, ``identity``, and the
#: charset some clients (Celery's kombu among them) put there.
PLAIN_ENCODINGS = frozenset({"", "identity", "utf-8", "utf8"})
GZIP = "gzip"

MAX_TRACEBACK_CHARS = 8000
MAX_ERROR_CHARS = 2000
MAX_PREVIOUS_ERRORS = 20


def now_ms() -> int:
    return int(time.time() * 1000)


def properties(
    *,
    task_name: str,
    task_id: str,
    priority: int,
    headers: dict[str, Any],
    app_id: str | None,
) -> Properties:
    """AMQP properties of a task message: persistent JSON, named and identified."""
    return Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        priority=priority,
        message_id=task_id,
        message_type=task_name,
        timestamp=datetime.now(tz=UTC),
        app_id=app_id,
        headers=headers,
    )


def copy_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Our headers of a received message, without those RabbitMQ added."""
    if not headers:
        return {}
    return {k: v for k, v in headers.items() if k not in BROKER_HEADERS}


def header_int(headers: Mapping[str, Any] | None, name: str, default: int) -> int:
    """An integer header, tolerating foreign publishers that send strings or nothing."""
    if not headers:
        return default
    value = headers.get(name, default)
    if type(value) is int:  # the common case, first: this runs several times per task
        return value
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def header_opt_int(headers: Mapping[str, Any] | None, name: str) -> int | None:
    """An integer header if present and readable, else None."""
    if not headers:
        return None
    value = headers.get(name)
    if type(value) is int:
        return value
    if value is None:
        return None
    value = header_int(headers, name, -1)
    return None if value == -1 else value


def attempt(headers: Mapping[str, Any] | None) -> int | None:
    """The ``leveret-attempt`` header: 1 when absent, None when it is malformed.

    Accepted: an integer (or a string of one, as some clients can only send strings)
    from 1 to ``MAX_ATTEMPT``. Anything else would turn into extra or skipped attempts.
    """
    if not headers:
        return 1
    value = headers.get(ATTEMPT, 1)
    if type(value) is int:  # the common case, first
        return value if 1 <= value <= MAX_ATTEMPT else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value)
        return number if 1 <= number <= MAX_ATTEMPT else None
    return None


def derived_task_id(props: Properties, body: bytes) -> str:
    """A task id for a message published without ``message_id``.

    Drawn from what a redelivery of the same message carries unchanged (its type,
    body, timestamp, app id, correlation id and publisher's headers), so every
    delivery, retry copy and dead letter of it has one id. Two id-less messages alike
    in all of these get the same id: a publisher that sends such twice on purpose
    must set ``message_id``.
    """
    digest = hashlib.sha256()
    for part in (props.message_type, props.timestamp, props.app_id, props.correlation_id):
        digest.update(repr(part).encode())
        digest.update(b"\0")
    own = copy_headers(props.headers)
    own.pop(RETURNS, None)
    own.pop(PUBLISHED_AT, None)
    digest.update(repr(sorted(own.items(), key=lambda item: item[0])).encode())
    digest.update(b"\0")
    digest.update(body)
    return digest.hexdigest()[:32]


class UnsupportedEncoding(ValueError):
    """A ``content_encoding`` the worker cannot undo, or a body that does not decode."""


def decoded_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The JSON bytes of a body: gzip undone (to at most ``limit`` + 1 bytes)."""
    name = (encoding or "").strip().lower()
    if name in PLAIN_ENCODINGS:
        return body
    if name != GZIP:
        raise UnsupportedEncoding(
            f"content_encoding {encoding!r} is not supported: publish the JSON as is "
            "(no content_encoding) or gzip it (content_encoding gzip)"
        )
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        # Bounded: a small gzip bomb must not take the worker's memory.
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise UnsupportedEncoding(f"the body is not valid gzip: {exc}") from None
    if len(plain) <= limit and not inflater.eof:
        raise UnsupportedEncoding("the gzip body is truncated")
    return plain


def returns(headers: Mapping[str, Any] | None) -> int:
    """How often this task came back without being settled: its worker died, lost its
    connection, or gave it back. RabbitMQ counts a quorum queue's returns in
    ``x-delivery-count``; a copy a worker republished carries the count before it."""
    if not headers:
        return 0
    return header_int(headers, DELIVERY_COUNT, 0) + header_int(headers, RETURNS, 0)


def header_str(headers: Mapping[str, Any] | None, name: str) -> str | None:
    if not headers or name not in headers:
        return None
    value = headers[name]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def describe(exc: BaseException) -> str:
    """``ErrorType: message``, bounded, for headers and logs."""
    text = f"{type(exc).__name__}: {exc}"
    return text[:MAX_ERROR_CHARS]


def error_headers(exc: BaseException, *, reason: str, worker: str, queue: str) -> dict[str, Any]:
    """What a dead letter records about why it died."""
    tb = "".join(traceback.format_exception(exc))
    if len(tb) > MAX_TRACEBACK_CHARS:
        tb = "...\n" + tb[-MAX_TRACEBACK_CHARS:]
    return {
        REASON: reason,
        ERROR_TYPE: f"{type(exc).__module__}.{type(exc).__qualname__}",
        ERROR_MESSAGE: str(exc)[:MAX_ERROR_CHARS],
        TRACEBACK: tb,
        FAILED_AT: now_ms(),
        WORKER: worker,
        ORIGIN_QUEUE: queue,
    }
