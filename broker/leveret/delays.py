"""Binary delay levels: any delay as a path through fixed-TTL queues.

Level k is a queue whose TTL is ``unit * 2**k``. A delay of N units is written into
the routing key as N's bits, highest level first, followed by the destination queue:
``b(L-1). ... .b1.b0.<queue>``. The message enters the level of its highest set bit;
each level's exchange sends keys with their bit set through its queue and the rest
straight on to the next level down, so the message waits exactly the sum of its set
bits. Every message in one level queue has the same TTL, so they expire in FIFO
order and a short delay never waits behind a long one.

This module is the pure arithmetic; ``leveret.amqp.topology`` declares the exchanges.
"""

from __future__ import annotations

from datetime import timedelta


def to_units(delay: timedelta | float, unit_ms: int) -> int:
    """Delay in whole units, rounded up: a message may be late, never early."""
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    if seconds < 0:
        raise ValueError(f"a delay cannot be negative (got {seconds} s)")
    micros = round(seconds * 1_000_000)
    unit_us = unit_ms * 1000
    return -(-micros // unit_us)


def entry_level(units: int) -> int:
    """The level a message of ``units`` delay enters at: its highest set bit."""
    if units <= 0:
        raise ValueError("a zero delay needs no delay level")
    return units.bit_length() - 1


def routing_key(units: int, levels: int, queue: str) -> str:
    """The routing key that carries a delay's bits and its destination queue."""
    if units < 0 or units >= 2**levels:
        raise ValueError(f"delay of {units} units is outside 0..{2**levels - 1}")
    bits = format(units, f"0{levels}b")
    return ".".join(bits) + "." + queue


def units_of(key: str, levels: int) -> tuple[int, str]:
    """Read a delay routing key back: (units, destination queue)."""
    parts = key.split(".", levels)
    if len(parts) != levels + 1 or any(p not in ("0", "1") for p in parts[:levels]):
        raise ValueError(f"not a delay routing key for {levels} levels: {key!r}")
    return int("".join(parts[:levels]), 2), parts[levels]


def level_pattern(level: int, levels: int, bit: int) -> str:
    """Topic pattern matching keys whose bit ``level`` equals ``bit``."""
    words = ["*"] * levels
    words[levels - 1 - level] = str(bit)
    return ".".join(words) + ".#"


def delivery_pattern(levels: int, queue: str) -> str:
    """Topic pattern binding a work queue to the delivery exchange."""
    return "*." * levels + queue
