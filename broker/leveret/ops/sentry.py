"""Sentry: errors of dead-lettered tasks, and traces from the sender into the task.

On the worker, every task runs in its own Sentry isolation scope tagged with the
task's name, id, queue and attempt, inside a ``queue.process`` transaction that
continues the trace of whoever sent it (Sentry's Queues module reads its
``messaging.*`` data). An error is reported when the task is dead-lettered, not on
each retry (``report_retries=True`` reports those too): a flaky dependency that
recovers on the second attempt is not an incident.

On the producer, ``before_send`` opens a ``queue.publish`` span and writes the
``sentry-trace`` and ``baggage`` headers into the message, so the task's transaction
joins the request that sent it; an outbox row keeps them from ``add`` to the relay's
publish. Add the middleware to the App of any service that
sends tasks::

    sentry_sdk.init(dsn=..., traces_sample_rate=0.1)
    app = App(middleware=[SentryMiddleware()])
"""

from __future__ import annotations

import logging
import random
from contextvars import ContextVar
from typing import Any

import sentry_sdk
from sentry_sdk.consts import OP, SPANDATA, SPANSTATUS
from sentry_sdk.integrations.logging import ignore_logger
from sentry_sdk.tracing import Span, TransactionSource
from sentry_sdk.tracing_utils import has_tracing_enabled

from leveret import message
from leveret.delivery import BODY_SIZE
from leveret.middleware import Middleware, Outcome
from leveret.task import TaskContext

log = logging.getLogger(__name__)

ORIGIN = "auto.queue.leveret"
SYSTEM = "rabbitmq"
_STATE = "sentry"

#: The ``queue.publish`` span of the send in progress in this context.
_publishing: ContextVar[Span | None] = ContextVar("leveret_sentry_publish", default=None)

_REPORTED = frozenset({Outcome.DEAD_LETTERED, Outcome.FAILED_PERMANENTLY})


def setup(dsn: str | None, *, traces_sample_rate: float = 0.0, **options: Any) -> bool:
    """Initialise Sentry from ``dsn`` unless the app already did; True if it is active.

    ``traces_sample_rate`` 0 still continues traces the sender sampled: the decision
    travels in the ``sentry-trace`` header.
    """
    if sentry_sdk.get_client().is_active():
        if dsn:
            log.info("Sentry was initialised by the app; --sentry-dsn is not used")
        return True
    if not dsn:
        return False
    sentry_sdk.init(dsn=dsn, traces_sample_rate=traces_sample_rate, **options)
    return sentry_sdk.get_client().is_active()


class SentryMiddleware(Middleware):
    """Reports failed tasks and traces sends and tasks to Sentry."""

    def __init__(self, *, report_retries: bool = False) -> None:
        self.report_retries = report_retries
        self._reported = _REPORTED | {Outcome.RETRIED} if report_retries else _REPORTED
        # One log line per task outcome is not a breadcrumb worth keeping, and its
        # warnings are reported here, as events with tags, not as log events. aiormq
        # logs every refused reconnect attempt as an error: not an event each either.
        ignore_logger("leveret.task")
        ignore_logger("aiormq.connection")
        self._quiet = False

    # -- worker ---------------------------------------------------------------------

    def before_task(self, ctx: TaskContext) -> None:
        client = sentry_sdk.get_client()
        if not client.is_active():
            return
        if not self._quiet:
            _quiet_sdk_debug_log(client.options)
            self._quiet = True
        trace = _trace_headers(ctx)
        decision = _sampling(client.options, trace)
        if decision is False:
            # Most tasks: no transaction would be sent. Skip the scope and transaction
            # (the bulk of the cost); an error is reported from after_task with both.
            return
        scope_manager = sentry_sdk.isolation_scope()
        scope = scope_manager.__enter__()
        _tag(scope, ctx)
        transaction = sentry_sdk.continue_trace(
            trace, op=OP.QUEUE_PROCESS, name=ctx.name, source=TransactionSource.TASK, origin=ORIGIN
        )
        transaction.set_data(SPANDATA.MESSAGING_SYSTEM, SYSTEM)
        transaction.set_data(SPANDATA.MESSAGING_MESSAGE_ID, ctx.task_id)
        transaction.set_data(SPANDATA.MESSAGING_DESTINATION_NAME, ctx.queue)
        transaction.set_data("messaging.message.body.size", ctx.state.get(BODY_SIZE, 0))
        transaction.set_data(SPANDATA.MESSAGING_MESSAGE_RETRY_COUNT, ctx.attempt - 1)
        if ctx.published_at_ms is not None:
            latency = max(message.now_ms() - ctx.published_at_ms, 0)
            transaction.set_data(SPANDATA.MESSAGING_MESSAGE_RECEIVE_LATENCY, latency)
        if decision is True and transaction.sampled is None:
            transaction.sampled = True  # drawn here already: the SDK must not draw again
        sentry_sdk.start_transaction(transaction).__enter__()
        ctx.state[_STATE] = (scope_manager, scope, transaction)

    def after_task(
        self, ctx: TaskContext, outcome: Outcome, error: BaseException | None, duration: float
    ) -> None:
        report = error is not None and outcome in self._reported
        state = ctx.state.pop(_STATE, None)
        if state is None:
            if report and sentry_sdk.get_client().is_active():
                with sentry_sdk.isolation_scope() as scope:
                    sentry_sdk.continue_trace(_trace_headers(ctx))  # link to the sender
                    _tag(scope, ctx)
                    _report(scope, ctx, outcome, error, duration)
            return
        scope_manager, scope, transaction = state
        try:
            if report:
                _report(scope, ctx, outcome, error, duration)
            transaction.set_status(
                SPANSTATUS.OK if outcome is Outcome.SUCCEEDED else SPANSTATUS.INTERNAL_ERROR
            )
            transaction.__exit__(None, None, None)
        finally:
            scope_manager.__exit__(None, None, None)

    def on_rejected(self, queue: str, reason: str, error: BaseException) -> None:
        if not sentry_sdk.get_client().is_active():
            return
        with sentry_sdk.new_scope() as scope:
            scope.set_tag("task.queue", queue)
            scope.set_tag("leveret.reason", reason)
            sentry_sdk.capture_exception(error)

    # -- producer -------------------------------------------------------------------

    def before_send(self, task_name: str, queue: str, headers: dict[str, Any]) -> None:
        if not sentry_sdk.get_client().is_active():
            return
        parent = sentry_sdk.get_current_span()
        if parent is None or "sentry-trace" in headers:
            # No transaction here, or the message already belongs to a trace (an outbox
            # row keeps the request's): carry this process's trace only if it has none.
            self.before_store(task_name, queue, headers)
            return
        span = parent.start_child(op=OP.QUEUE_PUBLISH, name=task_name, origin=ORIGIN)
        span.set_data(SPANDATA.MESSAGING_SYSTEM, SYSTEM)
        span.set_data(SPANDATA.MESSAGING_DESTINATION_NAME, queue)
        for key, value in span.iter_headers():
            headers.setdefault(key, value)
        _publishing.set(span)

    def before_store(self, task_name: str, queue: str, headers: dict[str, Any]) -> None:
        """The current trace, so that the task's errors and transaction join it."""
        if not sentry_sdk.get_client().is_active():
            return
        traceparent, baggage = sentry_sdk.get_traceparent(), sentry_sdk.get_baggage()
        if traceparent:
            headers.setdefault("sentry-trace", traceparent)
        if baggage:
            headers.setdefault("baggage", baggage)

    def after_send(
        self, task_name: str, queue: str, task_id: str, size: int, error: BaseException | None
    ) -> None:
        span = _publishing.get()
        if span is None:
            return
        _publishing.set(None)
        span.set_data(SPANDATA.MESSAGING_MESSAGE_ID, task_id)
        span.set_data("messaging.message.body.size", size)
        span.set_status(SPANSTATUS.OK if error is None else SPANSTATUS.INTERNAL_ERROR)
        span.finish()


def _trace_headers(ctx: TaskContext) -> dict[str, str]:
    trace = {}
    for name in ("sentry-trace", "baggage"):
        value = message.header_str(ctx.headers, name)
        if value:
            trace[name] = value
    return trace


def _sampling(options: dict[str, Any], trace: dict[str, str]) -> bool | None:
    """Whether this task's transaction is sampled, decided cheaply; None: ask the SDK.

    The sender's decision in ``sentry-trace`` (``<trace>-<span>-1`` or ``-0``) wins, as
    in the SDK; without one, ``traces_sample_rate`` is drawn here, so the 99 % of tasks
    that would not be sampled skip building a transaction at all.
    """
    if options.get("traces_sampler") is not None:
        return None
    if not has_tracing_enabled(options):
        return False
    parts = trace.get("sentry-trace", "").split("-")
    if len(parts) >= 3 and parts[2] in ("0", "1"):
        return parts[2] == "1"
    rate = float(options.get("traces_sample_rate") or 0.0)
    return rate > 0 and random.random() < rate


def _tag(scope: sentry_sdk.Scope, ctx: TaskContext) -> None:
    scope.set_tag("task.name", ctx.name)
    scope.set_tag("task.id", ctx.task_id)
    scope.set_tag("task.queue", ctx.queue)
    scope.set_tag("task.attempt", str(ctx.attempt))


def _report(
    scope: sentry_sdk.Scope,
    ctx: TaskContext,
    outcome: Outcome,
    error: BaseException | None,
    duration: float,
) -> None:
    scope.set_context(
        "task",
        {
            "payload_size": ctx.state.get(BODY_SIZE, 0),
            "outcome": outcome.value,
            "redelivered": ctx.redelivered,
            "duration_s": round(duration, 6),
        },
    )
    sentry_sdk.capture_exception(error)


def _quiet_sdk_debug_log(options: dict[str, Any]) -> None:
    """The SDK's logger is at DEBUG and filters records afterwards: every transaction
    builds a few records for nothing. Without ``debug=True`` they are never shown."""
    if not options.get("debug"):
        logging.getLogger("sentry_sdk.errors").setLevel(logging.INFO)
