"""The process series a worker's scrape carries, for catching leaks in production."""

from __future__ import annotations

import sys

import pytest
from prometheus_client import CollectorRegistry

from leveret import App
from leveret.ops.metrics import Metrics
from tests.support.ops import metric


async def test_an_installed_metrics_reports_memory_files_and_loop_tasks() -> None:
    metrics = Metrics(CollectorRegistry()).install(App(url="amqp://guest:guest@127.0.0.1:1/"))
    text = metrics.render().decode()
    assert metric(text, "leveret_event_loop_tasks") >= 1  # this test's own task
    if sys.platform == "linux":
        assert metric(text, "process_resident_memory_bytes") > 10_000_000
        assert metric(text, "process_open_fds") >= 3


def test_no_loop_no_task_count_and_the_family_still_declared() -> None:
    metrics = Metrics(CollectorRegistry()).install(App(url="amqp://guest:guest@127.0.0.1:1/"))
    text = metrics.render().decode()
    assert "# TYPE leveret_event_loop_tasks gauge" in text
    assert "\nleveret_event_loop_tasks " not in text


def test_a_bare_metrics_object_adds_no_process_series() -> None:
    """Only an installed one does: a scrape of nothing but task series stays that."""
    text = Metrics(CollectorRegistry()).render().decode()
    assert "process_" not in text
    assert "leveret_event_loop_tasks" not in text


@pytest.mark.parametrize("name", ["process_start_time_seconds", "process_max_fds"])
def test_series_that_do_not_add_up_across_processes_are_left_out(name: str) -> None:
    metrics = Metrics(CollectorRegistry()).install(App(url="amqp://guest:guest@127.0.0.1:1/"))
    assert name not in metrics.render().decode()
