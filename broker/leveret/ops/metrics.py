"""Prometheus metrics of a worker (and of the sends of any app), on a private registry.

The names below are a contract: dashboards and alerts are written against them.
Counters and histograms are fed by middleware hooks; what is a state rather than an
event (tasks in progress, readiness, reconnects) is read from the worker when
scraped, so it costs nothing per task. What each task feeds (its outcome, duration
and queue wait) is kept in plain per-(task, queue) counters, a few integer adds and a
bucket found by bisection, and rendered as the same counter and histogram families when
scraped: exact at every scrape, for a fraction of what ``prometheus_client``'s locked
children cost per task.

    from leveret.ops.metrics import Metrics
    metrics = Metrics().install(app)        # before the worker starts
    metrics.watch(worker)                   # in-progress, ready, reconnects
    # installed or watching, it also reports the process's memory, open files and
    # event-loop tasks (leveret.ops.resources)
    body = metrics.render()                 # text exposition for /metrics
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from leveret.middleware import Middleware, Outcome
from leveret.ops.resources import ProcessResources
from leveret.task import TaskContext

if TYPE_CHECKING:
    from leveret.app import App
    from leveret.worker import Worker

#: The text exposition format's content type.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Tasks run from milliseconds to the broker's 30 min consumer timeout.
DURATION_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    1800.0,
)
#: Queue wait includes retry backoff and scheduled delays: up to hours.
WAIT_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    14400.0,
)
CONFIRM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 15.0)


class _Buckets:
    """One histogram child as plain numbers: what ``Histogram.observe`` keeps, unlocked.

    Only the event loop writes (hooks and scrapes both run there); a value goes in the
    first bucket whose bound it does not exceed, as in ``prometheus_client``.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = (*bounds, math.inf)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        total, out = 0, []
        for bound, count in zip(self.bounds, self.counts, strict=True):
            total += count
            out.append((_LE[bound], float(total)))
        return out


#: The ``le`` label of each bound, as prometheus_client writes it.
_LE = {
    b: format(b, "") if b != math.inf else "+Inf"
    for b in (*DURATION_BUCKETS, *WAIT_BUCKETS, math.inf)
}


class _TaskSeries:
    """What one (task, queue) fed: attempts by outcome, durations, queue waits."""

    __slots__ = ("duration", "processed", "wait")

    def __init__(self) -> None:
        self.processed: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        self.duration = _Buckets(DURATION_BUCKETS)
        self.wait = _Buckets(WAIT_BUCKETS)


class Metrics(Middleware):
    """Counts sends, outcomes and rejections; times tasks, queue waits and confirms."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.published = Counter(
            "leveret_tasks_published",
            "Tasks sent and confirmed by the broker.",
            ["task", "queue"],
            registry=r,
        )
        self._series: dict[tuple[str, str], _TaskSeries] = {}
        r.register(_TaskFamilies(self._series, "processed"))
        self.rejected = Counter(
            "leveret_messages_rejected",
            "Messages dead-lettered before any task ran (bad input), by reason.",
            ["queue", "reason"],
            registry=r,
        )
        r.register(_TaskFamilies(self._series, "duration"))
        r.register(_TaskFamilies(self._series, "wait"))
        self.publish_errors = Counter(
            "leveret_publish_errors",
            "Sends the broker did not take, by error: NotConfirmed (nacked - a full "
            "queue's back-pressure - or timed out), Unroutable, AccessRefused, ...",
            ["task", "queue", "error"],
            registry=r,
        )
        self.confirm = Histogram(
            "leveret_publish_confirm_seconds",
            "Time from publish to the broker's confirm, in seconds.",
            buckets=CONFIRM_BUCKETS,
            registry=r,
        )
        self._sent: dict[tuple[str, str], Any] = {}
        self._state: _WorkerState | None = None
        self._exposed = CollectorRegistry(auto_describe=False)
        self._exposed.register(_WithoutCreated(self.registry))

    # -- wiring ---------------------------------------------------------------------

    def install(self, app: App) -> Metrics:
        """Add these metrics to an app's middleware and time its publisher's confirms."""
        if self not in app.middleware:
            app.middleware.append(self)
        app.sender.publisher.on_confirmed = self.confirm.observe
        for reg in app.registry.values():
            self.series(reg.task.name, reg.task.queue)
        if self._state is None:
            self._state = _WorkerState(app, None)
            self.registry.register(self._state)
            self.registry.register(ProcessResources())
        return self

    def watch(self, worker: Worker) -> Metrics:
        """Report a worker's in-progress tasks, readiness and reconnects when scraped."""
        if self._state is None:
            self._state = _WorkerState(worker.app, worker)
            self.registry.register(self._state)
            self.registry.register(ProcessResources())
        else:
            self._state.worker = worker
        for queue in worker.queues:
            for reg in worker.app.registry.values():
                if reg.task.queue == queue:
                    self.series(reg.task.name, queue)
        return self

    def render(self) -> bytes:
        """The text exposition of every metric, for ``/metrics``.

        Without the ``*_created`` series: a timestamp per series doubles what Prometheus
        stores and no alert here uses it.
        """
        return generate_latest(self._exposed)

    def series(self, task: str, queue: str) -> _TaskSeries:
        """The series of one task on one queue (created at zero on first use)."""
        found = self._series.get((task, queue))
        if found is None:
            found = self._series[(task, queue)] = _TaskSeries()
        return found

    # -- hooks ----------------------------------------------------------------------

    def before_task(self, ctx: TaskContext) -> None:
        published = ctx.published_at_ms
        if published is not None:
            wait = time.time() - published / 1000
            series = self._series.get((ctx.name, ctx.queue)) or self.series(ctx.name, ctx.queue)
            series.wait.observe(wait if wait > 0 else 0.0)

    def after_task(
        self, ctx: TaskContext, outcome: Outcome, error: BaseException | None, duration: float
    ) -> None:
        series = self._series.get((ctx.name, ctx.queue)) or self.series(ctx.name, ctx.queue)
        series.processed[outcome] += 1
        series.duration.observe(duration)

    def on_rejected(self, queue: str, reason: str, error: BaseException) -> None:
        self.rejected.labels(queue, reason).inc()

    def after_send(
        self, task_name: str, queue: str, task_id: str, size: int, error: BaseException | None
    ) -> None:
        if error is not None:
            self.publish_errors.labels(task_name, queue, type(error).__name__).inc()
            return
        child = self._sent.get((task_name, queue))
        if child is None:
            child = self._sent[(task_name, queue)] = self.published.labels(task_name, queue)
        child.inc()


#: name, help, and the label names beyond (task, queue), of the families tasks feed.
_FAMILIES = {
    "processed": (
        "leveret_tasks_processed",
        "Task attempts by outcome: succeeded, retried, dead-lettered, failed-permanently, "
        "abandoned.",
    ),
    "duration": ("leveret_task_duration_seconds", "Time a task attempt ran, in seconds."),
    "wait": (
        "leveret_task_queue_wait_seconds",
        "Time from publish (leveret-published-at) to start, in seconds.",
    ),
}


class _TaskFamilies(Collector):
    """One family fed by task hooks, rendered from the plain series when scraped."""

    def __init__(self, series: dict[tuple[str, str], _TaskSeries], which: str) -> None:
        self.series = series
        self.which = which

    def collect(self) -> Iterable[Metric]:
        name, doc = _FAMILIES[self.which]
        if self.which == "processed":
            counter = CounterMetricFamily(name, doc, labels=["task", "queue", "outcome"])
            for (task, queue), found in list(self.series.items()):
                for outcome, count in found.processed.items():
                    counter.add_metric([task, queue, outcome.value], count)
            yield counter
            return
        histogram = HistogramMetricFamily(name, doc, labels=["task", "queue"])
        for (task, queue), found in list(self.series.items()):
            buckets: _Buckets = getattr(found, self.which)
            histogram.add_metric([task, queue], buckets.cumulative(), buckets.sum)
        yield histogram


class _WorkerState(Collector):
    """Gauges and counters read from the worker and its connector at scrape time."""

    def __init__(self, app: App, worker: Worker | None) -> None:
        self.app = app
        self.worker = worker

    def collect(self) -> Iterable[Metric]:
        reconnects = CounterMetricFamily(
            "leveret_reconnects",
            "Connections to RabbitMQ re-opened after one was lost.",
            value=self.app.connector.reconnects,
        )
        yield reconnects
        worker = self.worker
        in_progress = GaugeMetricFamily(
            "leveret_tasks_in_progress",
            "Deliveries being processed now.",
            labels=["queue"],
        )
        ready = GaugeMetricFamily(
            "leveret_worker_ready",
            "1 when connected and consuming every queue, else 0.",
            labels=[],
        )
        # A process that only sends declares the families with no samples.
        if worker is not None:
            for queue in worker.queues:
                consumer = worker.consumers.get(queue)
                acker = consumer.acker if consumer is not None else None
                in_progress.add_metric([queue], acker.in_flight if acker is not None else 0)
            ready.add_metric([], 1 if worker.ready else 0)
        returned = CounterMetricFamily(
            "leveret_returned_deliveries",
            "Deliveries that came back unsettled (a worker died or lost its connection).",
            labels=["queue", "action"],
        )
        if worker is not None:
            for (queue, action), count in sorted(worker.returned.items()):
                returned.add_metric([queue, action], count)
        hook_errors = CounterMetricFamily(
            "leveret_middleware_errors",
            "Exceptions raised by middleware hooks (logged; the task or send went on).",
            labels=["middleware", "hook"],
        )
        for (middleware, hook), count in sorted(self.app.emitter.errors.items()):
            hook_errors.add_metric([middleware, hook], count)
        yield in_progress
        yield ready
        yield returned
        yield hook_errors


def merge(expositions: Iterable[str]) -> bytes:
    """One exposition from several processes' (``--processes``): samples added up.

    Counters, histograms and in-progress gauges are sums; ``leveret_worker_ready`` is
    the minimum (ready only if every process is). ``*_created`` series are dropped:
    they are per process. A restarted process starts its counters again from zero,
    which the sum shows as a partial reset; Prometheus' ``rate()`` absorbs it.
    """
    families: dict[str, Metric] = {}
    groups: dict[str, dict[tuple[tuple[str, str], ...], dict[str, float]]] = {}
    for text in expositions:
        for family in text_string_to_metric_families(text):
            if family.name.endswith("_created"):
                continue
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
                groups[family.name] = {}
            lowest = family.name == "leveret_worker_ready"
            by_labels = groups[family.name]
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                plain = dict(sample.labels)
                le = plain.pop("le", None)
                samples = by_labels.setdefault(tuple(sorted(plain.items())), {})
                key = f"{sample.name}\0{le or ''}"
                if lowest:
                    samples[key] = min(samples.get(key, sample.value), sample.value)
                else:
                    samples[key] = samples.get(key, 0.0) + sample.value
    for name, metric in families.items():
        for labels, samples in groups[name].items():
            for key, value in samples.items():
                sample_name, _, le = key.partition("\0")
                full = {**dict(labels), "le": le} if le else dict(labels)
                metric.add_sample(sample_name, full, value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))
    return generate_latest(registry)


class _WithoutCreated(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        for metric in self.registry.collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


class _Fixed(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics
