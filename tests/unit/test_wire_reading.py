"""Reading what foreign publishers send: the attempt header, derived ids, encodings."""

from __future__ import annotations

import gzip

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp.commands import Basic

from leveret import message as wire


@given(st.integers(min_value=1, max_value=wire.MAX_ATTEMPT))
def test_attempts_in_range_are_read_as_given(attempt: int) -> None:
    assert wire.attempt({wire.ATTEMPT: attempt}) == attempt
    assert wire.attempt({wire.ATTEMPT: str(attempt).encode()}) == attempt


@given(st.integers().filter(lambda n: not 1 <= n <= wire.MAX_ATTEMPT))
def test_attempts_out_of_range_are_malformed(attempt: int) -> None:
    assert wire.attempt({wire.ATTEMPT: attempt}) is None
    assert wire.attempt({wire.ATTEMPT: str(attempt)}) is None


@pytest.mark.parametrize("value", [True, 2.0, "two", "", None, [1], b"\xff"])
def test_attempts_that_are_not_integers_are_malformed(value: object) -> None:
    assert wire.attempt({wire.ATTEMPT: value}) is None


def test_no_attempt_header_means_the_first() -> None:
    assert wire.attempt(None) == 1
    assert wire.attempt({"other": 1}) == 1


def test_a_derived_id_ignores_what_redeliveries_and_put_backs_change() -> None:
    props = Basic.Properties(message_type="t", headers={"k": "v"})
    first = wire.derived_task_id(props, b"{}")
    again = Basic.Properties(
        message_type="t",
        headers={"k": "v", "x-delivery-count": 2, wire.RETURNS: 2, wire.PUBLISHED_AT: 5},
    )
    assert wire.derived_task_id(again, b"{}") == first
    assert wire.derived_task_id(props, b"{ }") != first
    other = Basic.Properties(message_type="t", headers={"k": "w"})
    assert wire.derived_task_id(other, b"{}") != first


def test_gzip_is_undone_within_the_limit() -> None:
    assert wire.decoded_body(gzip.compress(b"[1]"), "gzip", 100) == b"[1]"
    assert wire.decoded_body(b"[1]", "UTF-8", 100) == b"[1]"
    assert len(wire.decoded_body(gzip.compress(b"x" * 10_000), "gzip", 100)) == 101
    with pytest.raises(wire.UnsupportedEncoding, match="not supported"):
        wire.decoded_body(b"[1]", "br", 100)
    with pytest.raises(wire.UnsupportedEncoding, match="truncated"):
        wire.decoded_body(gzip.compress(b"[1, 2, 3]")[:-8], "gzip", 100)
