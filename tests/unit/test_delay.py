"""The delay ladder's arithmetic: routing keys carry exactly the delay, never less."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leveret import delays as delay

LEVELS = 32
UNIT_MS = 10
MAX_UNITS = 2**LEVELS - 1


@given(st.integers(min_value=0, max_value=MAX_UNITS))
def test_bits_in_the_key_sum_to_the_delay(units: int) -> None:
    key = delay.routing_key(units, LEVELS, "emails")
    bits = key.split(".")[:LEVELS]
    assert sum(2 ** (LEVELS - 1 - i) for i, b in enumerate(bits) if b == "1") == units
    assert delay.units_of(key, LEVELS) == (units, "emails")


@given(st.integers(min_value=1, max_value=MAX_UNITS))
def test_a_message_enters_at_its_highest_set_bit(units: int) -> None:
    level = delay.entry_level(units)
    assert 2**level <= units < 2 ** (level + 1)


@given(st.floats(min_value=0, max_value=40 * 24 * 3600, allow_nan=False))
def test_rounding_never_makes_a_message_early(seconds: float) -> None:
    units = delay.to_units(seconds, UNIT_MS)
    assert units * UNIT_MS / 1000 >= seconds - 1e-6  # never early (beyond float noise)
    assert units * UNIT_MS / 1000 < seconds + UNIT_MS / 1000 + 1e-6  # at most one unit late


def test_range_covers_thirty_days_and_more() -> None:
    assert delay.to_units(timedelta(days=30), UNIT_MS) < MAX_UNITS
    assert delay.routing_key(MAX_UNITS, LEVELS, "q").startswith("1." * LEVELS)
    assert delay.routing_key(0, LEVELS, "q") == "0." * LEVELS + "q"
    with pytest.raises(ValueError, match="outside"):
        delay.routing_key(MAX_UNITS + 1, LEVELS, "q")
    with pytest.raises(ValueError, match="negative"):
        delay.to_units(-1, UNIT_MS)


@given(
    st.integers(min_value=0, max_value=LEVELS - 1), st.integers(min_value=0, max_value=MAX_UNITS)
)
def test_level_patterns_split_keys_by_their_bit(level: int, units: int) -> None:
    key = delay.routing_key(units, LEVELS, "some.queue")
    bit = (units >> level) & 1
    assert _topic_match(delay.level_pattern(level, LEVELS, bit), key)
    assert not _topic_match(delay.level_pattern(level, LEVELS, 1 - bit), key)
    assert _topic_match(delay.delivery_pattern(LEVELS, "some.queue"), key)
    assert not _topic_match(delay.delivery_pattern(LEVELS, "queue"), key)


def _topic_match(pattern: str, key: str) -> bool:
    """RabbitMQ's topic matching: * is one word, # is zero or more."""
    p, k = pattern.split("."), key.split(".")

    def match(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(k)
        if p[i] == "#":
            return any(match(i + 1, jj) for jj in range(j, len(k) + 1))
        return j < len(k) and p[i] in ("*", k[j]) and match(i + 1, j + 1)

    return match(0, 0)
