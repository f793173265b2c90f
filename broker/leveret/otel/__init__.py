"""OpenTelemetry tracing for sends and tasks (install ``leveret[otel]``).

A ``publish`` span (kind PRODUCER) per send, and a ``process`` span (kind CONSUMER) per
attempt, following the OpenTelemetry messaging semantic conventions for RabbitMQ. The
context travels in the ``traceparent`` / ``tracestate`` headers of the wire format (any
W3C-speaking publisher joins the trace), so an attempt is a child of the send that
made it. A retry copy also carries ``leveret-retry-of``, the traceparent of the
attempt that failed: the next attempt's span links to it, so a task's attempts can be
followed in order. A dead-lettered task's span carries a ``dead-lettered`` event with
the reason and the error. Spans go to the global tracer provider unless one is given::

    from leveret.otel import OpenTelemetryMiddleware

    OpenTelemetryMiddleware().install(app)  # on the producer's App and the worker's
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from leveret.delivery import BODY_SIZE
from leveret.middleware import RETRY_HEADERS, Middleware, Outcome
from leveret.task import TaskContext

if TYPE_CHECKING:
    from leveret.app import App

__all__ = ["RETRY_OF", "OpenTelemetryMiddleware"]

#: Header on a retry copy: the W3C traceparent of the attempt that failed.
RETRY_OF = "leveret-retry-of"
SYSTEM = "rabbitmq"
_STATE = "otel"
_DEAD = frozenset({Outcome.DEAD_LETTERED, Outcome.FAILED_PERMANENTLY})

#: The ``publish`` span of the send in progress in this context.
_publishing: ContextVar[trace.Span | None] = ContextVar("leveret_otel_publish", default=None)


class OpenTelemetryMiddleware(Middleware):
    """Producer and consumer spans, W3C trace context in the message headers."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("leveret", tracer_provider=tracer_provider)
        self.exchange = "leveret.tasks"

    def install(self, app: App) -> OpenTelemetryMiddleware:
        """Add to an app's middleware, naming its tasks exchange in the spans."""
        self.exchange = app.sender.names.tasks_exchange
        if self not in app.middleware:
            app.middleware.append(self)
        return self

    def _attributes(self, queue: str, operation: str, kind: str) -> dict[str, Any]:
        return {
            "messaging.system": SYSTEM,
            "messaging.operation.name": operation,
            "messaging.operation.type": kind,
            "messaging.destination.name": self.exchange,
            "messaging.rabbitmq.destination.routing_key": queue,
        }

    # -- producer -------------------------------------------------------------------

    def before_send(self, task_name: str, queue: str, headers: dict[str, Any]) -> None:
        attributes = self._attributes(queue, "publish", "send")
        attributes["leveret.task.name"] = task_name
        # A message that already carries a trace context (an outbox row, written inside
        # a request) is published as part of that trace, not of the relay's.
        stored = {k: v for k in ("traceparent", "tracestate") if (v := _text(headers, k))}
        span = self.tracer.start_span(
            f"publish {self.exchange}",
            context=propagate.extract(stored) if stored else None,
            kind=SpanKind.PRODUCER,
            attributes=attributes,
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        headers.update(carrier)
        _publishing.set(span)

    def before_store(self, task_name: str, queue: str, headers: dict[str, Any]) -> None:
        """The current trace context, which the relay's publish span continues."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        for key, value in carrier.items():
            headers.setdefault(key, value)

    def after_send(
        self, task_name: str, queue: str, task_id: str, size: int, error: BaseException | None
    ) -> None:
        span = _publishing.get()
        if span is None:
            return
        _publishing.set(None)
        span.set_attribute("messaging.message.id", task_id)
        span.set_attribute("messaging.message.body.size", size)
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()

    # -- worker ---------------------------------------------------------------------

    def before_task(self, ctx: TaskContext) -> None:
        carrier = {k: v for k in ("traceparent", "tracestate") if (v := _text(ctx.headers, k))}
        parent = propagate.extract(carrier) if carrier else None
        links = []
        previous = _text(ctx.headers, RETRY_OF)
        if previous:
            linked = trace.get_current_span(propagate.extract({"traceparent": previous}))
            if linked.get_span_context().is_valid:
                links.append(Link(linked.get_span_context(), {"leveret.link": "previous-attempt"}))
        attributes = self._attributes(ctx.queue, "process", "process")
        attributes.update(
            {
                "messaging.message.id": ctx.task_id,
                "messaging.message.body.size": ctx.state.get(BODY_SIZE, 0),
                "leveret.task.name": ctx.name,
                "leveret.task.attempt": ctx.attempt,
                "leveret.task.redelivered": ctx.redelivered,
            }
        )
        span = self.tracer.start_span(
            f"process {ctx.queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        )
        token = context.attach(trace.set_span_in_context(span, parent))
        ctx.state[_STATE] = (span, token)
        # What the retry copy, if there is one, carries for the next attempt's link.
        carrier = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        if "traceparent" in carrier:
            ctx.state.setdefault(RETRY_HEADERS, {})[RETRY_OF] = carrier["traceparent"]

    def after_task(
        self, ctx: TaskContext, outcome: Outcome, error: BaseException | None, duration: float
    ) -> None:
        state = ctx.state.pop(_STATE, None)
        if state is None:
            return
        span, token = state
        try:
            span.set_attribute("leveret.task.outcome", outcome.value)
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            if outcome in _DEAD:
                span.add_event("dead-lettered", _dead_attributes(outcome.value, error))
            span.end()
        finally:
            context.detach(token)

    def on_rejected(self, queue: str, reason: str, error: BaseException) -> None:
        attributes = self._attributes(queue, "process", "process")
        with self.tracer.start_as_current_span(
            f"process {queue}", kind=SpanKind.CONSUMER, attributes=attributes,
            record_exception=False, set_status_on_exception=False,
        ) as span:  # fmt: skip
            span.add_event("dead-lettered", _dead_attributes(reason, error))
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))


def _dead_attributes(reason: str, error: BaseException | None) -> dict[str, str]:
    attributes = {"leveret.reason": reason}
    if error is not None:
        attributes["exception.type"] = type(error).__name__
        attributes["exception.message"] = str(error)[:500]
    return attributes


def _text(headers: Any, name: str) -> str | None:
    value = headers.get(name) if headers else None
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) and value else None
