"""AMQP field tables encoded exactly, for copies the system re-publishes.

pamqp, which encodes aiormq's frames, writes every float as a 32-bit float and cannot
write ``bytes`` at all; ``ExactProperties`` encodes headers itself so that a double, a
byte string or a non-UTF-8 string header of a received message survives a retry, a
dead letter or a replay unchanged.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

from pamqp import encode as amqp_encode
from pamqp.commands import Basic


def _is_float32(value: float) -> bool:
    if math.isnan(value):
        return False  # keep the exact NaN bits as a double
    try:
        return bool(struct.unpack(">f", struct.pack(">f", value))[0] == value)
    except OverflowError:
        return False


def encode_value(value: Any) -> bytes:
    """One field value, tagged with its AMQP type, losing nothing pamqp would lose."""
    if isinstance(value, bool):
        return b"t" + struct.pack(">B", value)
    if isinstance(value, float):
        if _is_float32(value):
            return b"f" + struct.pack(">f", value)
        return b"d" + struct.pack(">d", value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return b"x" + struct.pack(">I", len(raw)) + raw
    if isinstance(value, Mapping):
        return b"F" + encode_table(value)
    if isinstance(value, list | tuple):
        items = b"".join(encode_value(v) for v in value)
        return b"A" + struct.pack(">I", len(items)) + items
    return bytes(amqp_encode.encode_table_value(value))


def encode_table(table: Mapping[str, Any]) -> bytes:
    """A field table, keys sorted as pamqp sorts them."""
    parts = []
    for key, item in sorted(table.items()):
        parts.append(amqp_encode.short_string(str(key)))
        try:
            parts.append(encode_value(item))
        except TypeError as exc:
            raise TypeError(f"header {key!r}: {exc}") from None
    payload = b"".join(parts)
    return struct.pack(">I", len(payload)) + payload


class ExactProperties(Basic.Properties):
    """Basic properties whose headers are encoded by ``encode_table``.

    (No ``__slots__`` here: pamqp marshals the fields listed in ``self.__slots__``,
    which must stay the parent's.)
    """

    def encode_property(self, name: str, value: Any) -> bytes:
        if name == "headers":
            return encode_table(value)
        return bytes(super().encode_property(name, value))
