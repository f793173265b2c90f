"""Priority bands: which queue a priority goes to, and which queues warn."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leveret.amqp.topology import QueueSpec
from leveret.errors import ConfigError
from leveret.priorities import unhonoured

bands = st.lists(st.integers(1, 255), min_size=1, max_size=6, unique=True).map(
    lambda b: tuple(sorted(b))
)


@given(bands, st.integers(0, 255), st.integers(0, 255))
def test_a_higher_priority_never_goes_to_a_lower_band(
    lowest: tuple[int, ...], a: int, b: int
) -> None:
    spec = QueueSpec("jobs", type="quorum", priority_bands=lowest)
    order = spec.bands  # highest first
    low, high = sorted((a, b))
    assert order.index(spec.band(high)) <= order.index(spec.band(low))


def test_bands_are_named_by_their_lowest_priority() -> None:
    spec = QueueSpec("jobs", type="quorum", priority_bands=(3, 7))
    assert spec.bands == ["jobs.p7", "jobs.p3", "jobs"]
    assert [spec.band(p) for p in (0, 2, 3, 6, 7, 10)] == [
        "jobs",
        "jobs",
        "jobs.p3",
        "jobs.p3",
        "jobs.p7",
        "jobs.p7",
    ]


@pytest.mark.parametrize("wrong", [(5, 3), (0, 5), (5, 5), (256,)])
def test_bands_out_of_order_or_range_are_refused(wrong: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match="ascending order"):
        QueueSpec("jobs", type="quorum", priority_bands=wrong)


def test_only_a_plain_quorum_queue_given_priorities_is_unhonoured() -> None:
    assert unhonoured(QueueSpec("a"), [9]) is None
    assert unhonoured(QueueSpec("b", type="quorum", priority_bands=(5,)), [9]) is None
    assert unhonoured(QueueSpec("c", type="quorum"), [0]) is None
    assert "priority_bands=(5,)" in str(unhonoured(QueueSpec("d", type="quorum"), [0, 9]))
