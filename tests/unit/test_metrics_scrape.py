"""The metrics scrape is exactly what ``prometheus_client``'s own counters and
histograms would expose after the same hook calls: the cheaper series lose nothing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from leveret import Outcome, TaskContext
from leveret.ops.metrics import (
    CONFIRM_BUCKETS,
    DURATION_BUCKETS,
    WAIT_BUCKETS,
    Metrics,
    _WithoutCreated,
)

TASKS = [("a.one", "q1"), ("a.two", "q1"), ("b.one", "q2")]

calls = st.lists(
    st.tuples(
        st.sampled_from(TASKS),
        st.sampled_from(list(Outcome)),
        # durations around every bucket bound, exactly on them, and far past the last
        st.one_of(st.sampled_from(DURATION_BUCKETS), st.floats(0, 4000, allow_nan=False)),
        st.one_of(st.none(), st.floats(0, 20000, allow_nan=False)),
    ),
    max_size=60,
)


def reference(events: list[tuple[tuple[str, str], Outcome, float, float | None]]) -> bytes:
    """The exposition of the families as ``prometheus_client`` keeps them, in order."""
    r = CollectorRegistry()
    Counter("leveret_tasks_published", "Tasks sent and confirmed by the broker.",
            ["task", "queue"], registry=r)  # fmt: skip
    processed = Counter(
        "leveret_tasks_processed",
        "Task attempts by outcome: succeeded, retried, dead-lettered, failed-permanently, "
        "abandoned.",
        ["task", "queue", "outcome"],
        registry=r,
    )
    Counter("leveret_messages_rejected",
            "Messages dead-lettered before any task ran (bad input), by reason.",
            ["queue", "reason"], registry=r)  # fmt: skip
    duration = Histogram("leveret_task_duration_seconds", "Time a task attempt ran, in seconds.",
                         ["task", "queue"], buckets=DURATION_BUCKETS, registry=r)  # fmt: skip
    wait = Histogram("leveret_task_queue_wait_seconds",
                     "Time from publish (leveret-published-at) to start, in seconds.",
                     ["task", "queue"], buckets=WAIT_BUCKETS, registry=r)  # fmt: skip
    seen: set[tuple[str, str]] = set()
    for (task, queue), outcome, took, waited in events:
        if (task, queue) not in seen:
            seen.add((task, queue))
            for o in Outcome:
                processed.labels(task, queue, o.value)
            duration.labels(task, queue)
            wait.labels(task, queue)
        if waited is not None:
            wait.labels(task, queue).observe(waited)
        processed.labels(task, queue, outcome.value).inc()
        duration.labels(task, queue).observe(took)
    Counter("leveret_publish_errors",
            "Sends the broker did not take, by error: NotConfirmed (nacked - a full "
            "queue's back-pressure - or timed out), Unroutable, AccessRefused, ...",
            ["task", "queue", "error"], registry=r)  # fmt: skip
    Histogram("leveret_publish_confirm_seconds",
              "Time from publish to the broker's confirm, in seconds.",
              buckets=CONFIRM_BUCKETS, registry=r)  # fmt: skip
    exposed = CollectorRegistry(auto_describe=False)
    exposed.register(_WithoutCreated(r))
    return generate_latest(exposed)


def ours(events: list[tuple[tuple[str, str], Outcome, float, float | None]]) -> bytes:
    metrics = Metrics()
    for (task, queue), outcome, took, waited in events:
        ctx = TaskContext(
            task_id="t", name=task, queue=queue, attempt=1, redelivered=False, headers={}
        )
        if waited is not None:
            # before_task measures from now; feed the wait the same way it would
            metrics.series(task, queue).wait.observe(waited)
        metrics.before_task(ctx)
        metrics.after_task(ctx, outcome, None, took)
    return metrics.render()


@settings(max_examples=150, deadline=None)
@given(calls)
def test_scrape_is_what_prometheus_client_exposes(
    events: list[tuple[tuple[str, str], Outcome, float, float | None]],
) -> None:
    assert ours(events) == reference(events)


def test_queue_wait_comes_from_the_published_header() -> None:
    metrics = Metrics()
    ctx = TaskContext(
        task_id="t", name="a.one", queue="q1", attempt=1, redelivered=False, headers={},
        published_at_ms=1,  # long ago: lands in +Inf only
    )  # fmt: skip
    metrics.before_task(ctx)
    text = metrics.render().decode()
    assert (
        'leveret_task_queue_wait_seconds_bucket{le="14400.0",queue="q1",task="a.one"} 0.0' in text
    )
    assert 'leveret_task_queue_wait_seconds_bucket{le="+Inf",queue="q1",task="a.one"} 1.0' in text
    assert 'leveret_task_queue_wait_seconds_count{queue="q1",task="a.one"} 1.0' in text
