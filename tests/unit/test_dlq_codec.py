"""The export format and the exact header encoding lose nothing an AMQP header can hold."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import decode as amqp_decode
from pamqp.commands import Basic

from leveret.deadletter.codec import (
    MAX_DEPTH,
    CodecError,
    ExactProperties,
    dumps,
    encode_table,
    from_json,
    loads,
    to_json,
)

keys = st.text(min_size=1, max_size=20).filter(lambda k: len(k.encode()) <= 128)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.builds(
        lambda m, s: Decimal(m).scaleb(-s),
        st.integers(min_value=-(2**31), max_value=2**31 - 1),
        st.integers(min_value=0, max_value=20),
    ),
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(2100, 1, 1),
        timezones=st.just(UTC),
    ).map(lambda d: d.replace(microsecond=0)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
tables = st.dictionaries(keys, values, max_size=6)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same kind (bytes stays bytes, a float stays a float)."""
    if isinstance(a, bytes | bytearray):
        return isinstance(b, bytes | bytearray) and bytes(a) == bytes(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


@settings(max_examples=80, deadline=None)
@given(tables)
def test_json_round_trip_keeps_every_type(table: dict[str, Any]) -> None:
    text = json.dumps({k: to_json(v) for k, v in table.items()}, allow_nan=False)
    back = {k: from_json(v) for k, v in json.loads(text).items()}
    assert same(table, back)


@settings(max_examples=80, deadline=None)
@given(tables)
def test_wire_round_trip_keeps_every_value(table: dict[str, Any]) -> None:
    _, decoded = amqp_decode.field_table(encode_table(table))
    assert same(table, decoded)


def test_doubles_survive_where_pamqp_would_shorten_them() -> None:
    _, decoded = amqp_decode.field_table(encode_table({"x": 0.1, "y": 0.5, "nan": math.nan}))
    assert decoded["x"] == 0.1
    assert decoded["y"] == 0.5
    assert math.isnan(decoded["nan"])


def test_tables_with_dollar_keys_are_values_not_tags() -> None:
    table = {"$bytes": "not a tag", "nested": {"$float": 1}}
    encoded = json.loads(json.dumps(to_json(table)))
    assert from_json(encoded) == table


def test_properties_marshal_headers_exactly() -> None:
    headers = {"d": 0.1, "b": b"\x00\xff", "nested": {"when": datetime(2024, 5, 1, tzinfo=UTC)}}
    props = ExactProperties(message_id="id-1", priority=3, headers=headers)
    back = Basic.Properties()
    raw = props.marshal()
    back.unmarshal(int.from_bytes(raw[:2], "big"), raw[2:])
    assert back.message_id == "id-1"
    assert back.priority == 3
    assert same(headers, back.headers)


def test_record_round_trip() -> None:
    props = Basic.Properties(
        content_type="application/json",
        content_encoding="gzip",
        delivery_mode=2,
        priority=7,
        correlation_id="c",
        reply_to="r",
        expiration="60000",
        message_id="m",
        timestamp=datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        message_type="emails.send",
        user_id="guest",
        app_id="billing",
        headers={"amount": Decimal("12.50"), "tags": ["a", 1, None]},
    )
    line = dumps("emails", b"\x00not json\xff", props)
    assert "\n" not in line
    record = loads(line)
    assert record.queue == "emails"
    assert record.body == b"\x00not json\xff"
    assert record.properties["timestamp"] == props.timestamp
    assert record.properties["priority"] == 7
    assert same(record.headers, props.headers)
    again = dumps(record.queue, record.body, record.amqp_properties())
    assert again == line


def line(**overrides: Any) -> str:
    record: dict[str, Any] = {
        "leveret": "dead-letter/1",
        "queue": "q",
        "body": "",
        "properties": {},
        "headers": {},
    }
    record.update(overrides)
    return json.dumps(record)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("{", "not JSON"),
        ('{"queue": "q"}', "not a dead-letter record"),
        (line(queue=""), "queue"),
        (line(body="%%%"), "base64"),
        (line(properties={"colour": "x"}), "unknown properties"),
        (line(properties={"priority": "x"}), "priority must be"),
        (line(headers={"h": {"$weird": 1}}), "tagged value"),
        (line(headers={"h": {"$decimal": "x"}}), r"bad \$decimal"),
        (line(headers={"h": {"$bytes": 1}}), "must hold a string"),
        (line(headers={"h": "@"}).replace('"@"', "[" * 100_000 + "]" * 100_000), "too deeply"),
        (line(headers={"h": "@"}).replace('"@"', "[" * 900 + "]" * 900), "too deeply"),
    ],
)
def test_bad_lines_say_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(CodecError, match=complaint):
        loads(text)


def test_the_depth_limit_is_the_same_on_every_python_and_what_passes_can_be_published() -> None:
    deep: list[Any] = []
    for _ in range(MAX_DEPTH - 2):  # the record and its headers are two levels
        deep = [deep]
    record = loads(dumps("q", b"", Basic.Properties(headers={"h": deep})))
    assert record.headers == {"h": deep}
    assert encode_table(record.headers)  # what import and replay then publish
    with pytest.raises(CodecError, match="too deeply"):
        loads(dumps("q", b"", Basic.Properties(headers={"h": [deep]})))


def test_delivery_state_is_not_exported() -> None:
    props = Basic.Properties(message_id="m", headers={"x-delivery-count": 3, "x-death": []})
    assert loads(dumps("q", b"", props)).headers == {"x-death": []}
