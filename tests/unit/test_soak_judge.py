"""How the soak test judges its samples (tests/faults/soak.py): what counts as flat."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.faults.soak import FD_MARGIN, TASK_MARGIN, Sample, judge, timeline

MB = 1_000_000


def series(
    rss: list[int], fds: list[int] | None = None, tasks: list[int] | None = None
) -> list[Sample]:
    n = len(rss)
    fds = fds or [10] * n
    tasks = tasks or [9] * n
    return [Sample("worker", 1, float(i * 10), rss[i], fds[i], tasks[i], 1.0) for i in range(n)]


def test_warm_up_is_left_out() -> None:
    # doubled during the first minute, flat after it
    samples = series([30 * MB] * 6 + [60 * MB] * 12)
    assert judge("worker", samples, since=60).failures() == []
    assert judge("worker", samples, since=0).failures() != []


@given(st.lists(st.integers(50 * MB, 54 * MB), min_size=9, max_size=60))
def test_noise_under_ten_percent_passes(rss: list[int]) -> None:
    assert judge("worker", series(rss), since=0).failures() == []


def test_steady_growth_fails_on_memory() -> None:
    rss = [50 * MB + i * MB for i in range(18)]  # +1 MB every 10 s
    (failure,) = judge("worker", series(rss), since=0).failures()
    assert "resident memory grew" in failure


def test_one_spike_in_the_last_third_does_not_decide() -> None:
    rss = [50 * MB] * 17 + [80 * MB]
    assert judge("worker", series(rss), since=0).failures() == []


def test_descriptors_and_tasks_within_their_margins_are_flat() -> None:
    n = 12
    fds = [10] * 8 + [10 + FD_MARGIN] * 4
    tasks = [5] * 8 + [5 + TASK_MARGIN] * 4
    assert judge("worker", series([50 * MB] * n, fds, tasks), since=0).failures() == []


def test_a_climb_past_the_margins_fails() -> None:
    n = 12
    fds = [10 + i for i in range(n)]
    tasks = [5 + 3 * i for i in range(n)]
    failures = judge("worker", series([50 * MB] * n, fds, tasks), since=0).failures()
    assert [f.split(" rose")[0] for f in failures] == [
        "worker: open file descriptors",
        "worker: asyncio tasks",
    ]


def test_a_sample_line_reads_back() -> None:
    sample = Sample("producer", 42, 1700000000.25, 123456, 7, 3, 8.5)
    assert Sample.parse(sample.line()) == sample


def test_the_timeline_keeps_one_row_a_minute() -> None:
    table = timeline(series([50 * MB] * 18), start=0.0)
    assert len(table.splitlines()) == 2 + 3
