"""Backoff maths and the retry decision."""

from __future__ import annotations

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from leveret import ConfigError, Permanent, Retry, RetryPolicy
from leveret.retry import DeadReason


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0, max_value=100),
    factor=st.floats(min_value=1, max_value=10),
    cap=st.floats(min_value=0, max_value=86_400),
    r=st.floats(min_value=0, max_value=1),
)
def test_backoff_stays_within_its_jitter_band_and_the_cap(
    attempt: int, base: float, factor: float, cap: float, r: float
) -> None:
    none = RetryPolicy(base=base, factor=factor, cap=cap, jitter="none").backoff(attempt)
    assert 0 <= none <= cap
    equal = RetryPolicy(base=base, factor=factor, cap=cap, jitter="equal").backoff(
        attempt, lambda: r
    )
    assert none / 2 - 1e-9 <= equal <= none + 1e-9
    full = RetryPolicy(base=base, factor=factor, cap=cap, jitter="full").backoff(attempt, lambda: r)
    assert 0 <= full <= none + 1e-9


def test_default_backoff_doubles_from_one_second_up_to_an_hour() -> None:
    policy = RetryPolicy(jitter="none")
    assert [policy.backoff(a) for a in range(1, 6)] == [1, 2, 4, 8, 16]
    assert policy.backoff(100) == 3600


def test_decisions() -> None:
    policy = RetryPolicy(max_attempts=3, jitter="none", permanent=(Permanent, KeyError))
    assert policy.decide(RuntimeError("x"), 1) == 1.0
    assert policy.decide(RuntimeError("x"), 3) == DeadReason.EXHAUSTED
    assert policy.decide(Permanent("x"), 1) == DeadReason.PERMANENT
    assert policy.decide(KeyError("x"), 1) == DeadReason.PERMANENT
    assert policy.decide(Retry(delay=7.5), 1) == 7.5
    assert policy.decide(Retry(delay=7.5), 3) == DeadReason.EXHAUSTED
    only_io = RetryPolicy(retry_on=(OSError,))
    assert only_io.decide(ValueError("x"), 1) == DeadReason.PERMANENT
    with pytest.raises(pydantic.ValidationError) as caught:
        pydantic.TypeAdapter(int).validate_python("x")
    assert RetryPolicy().decide(caught.value, 1) == DeadReason.PERMANENT


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigError):
        RetryPolicy(factor=0.5)
    with pytest.raises(ValueError, match=">= 0"):
        Retry(delay=-1)
