"""Dead letters as JSON lines, and AMQP properties that publish header values exactly.

One line per message, so a dead-letter queue can be backed up, edited with ``jq``
and moved between clusters::

    {"leveret": "dead-letter/1", "queue": "emails", "body": "<base64>",
     "properties": {"message_id": "...", "timestamp": {"$datetime": "..."}},
     "headers": {"leveret-attempt": 3, "blob": {"$bytes": "AAE="}}}

JSON keeps ``null``, booleans, integers and strings as they are. Every other AMQP
value carries an explicit tag, so nothing is guessed when it is read back:
``{"$bytes": base64}``, ``{"$float": "0.1"}``, ``{"$decimal": "12.50"}``,
``{"$datetime": ISO 8601}``, ``{"$table": {...}}`` for nested tables; arrays are JSON
arrays. An object without a tag is never a value, so a table whose keys start with
``$`` is still read correctly.

Re-published copies use ``leveret.amqp.table.ExactProperties``, so header values
survive unchanged.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from leveret.amqp.table import ExactProperties, encode_table, encode_value
from leveret.amqp.types import Properties

__all__ = ["ExactProperties", "encode_table", "encode_value"]  # re-exported

FORMAT = "dead-letter/1"

#: AMQP basic properties a record may carry, in the order AMQP defines them.
PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "message_type",
    "user_id",
    "app_id",
    "cluster_id",
)
_INT_PROPERTIES = frozenset({"delivery_mode", "priority"})

#: Headers about one delivery of a copy, not about the message: not exported.
DELIVERY_STATE = frozenset({"x-delivery-count"})

_TAGS = ("$bytes", "$float", "$decimal", "$datetime", "$table")

#: Deepest nesting of JSON arrays and objects a line may hold. Reading values back and
#: publishing them recurse: pamqp's encoder gives up near 497 levels on every Python,
#: while how deep Python's own recursion limit lets this reader go moved from about
#: 497 levels (3.11) to 996 (3.12 inlined comprehensions). One explicit limit, well
#: under both, makes a line read the same on every version, and never accepted here
#: only to fail when it is replayed.
MAX_DEPTH = 200


class CodecError(ValueError):
    """A line that is not a dead letter this format can read."""


# -- AMQP values <-> JSON ---------------------------------------------------------------


def to_json(value: Any) -> Any:
    """An AMQP field value as JSON, tagged wherever JSON alone would lose its type."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, float):
        return {"$float": repr(value)}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return {"$datetime": aware.isoformat()}
    if isinstance(value, Mapping):
        return {"$table": {str(k): to_json(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    raise CodecError(f"cannot encode a {type(value).__name__} as an AMQP value: {value!r}")


def from_json(value: Any) -> Any:
    """The AMQP field value a ``to_json`` result stands for."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, list):
        return [from_json(v) for v in value]
    if isinstance(value, dict):
        if len(value) != 1 or next(iter(value)) not in _TAGS:
            raise CodecError(
                f"an object must be one tagged value ({', '.join(_TAGS)}), got keys "
                f"{sorted(value)[:5]}"
            )
        tag, raw = next(iter(value.items()))
        return _untag(tag, raw)
    raise CodecError(f"unexpected JSON value {value!r}")


def _untag(tag: str, raw: Any) -> Any:
    if tag == "$table":
        if not isinstance(raw, dict):
            raise CodecError("$table must hold an object")
        return {str(k): from_json(v) for k, v in raw.items()}
    if not isinstance(raw, str):
        raise CodecError(f"{tag} must hold a string, got {raw!r}")
    try:
        if tag == "$bytes":
            return base64.b64decode(raw, validate=True)
        if tag == "$float":
            return float(raw)
        if tag == "$decimal":
            return Decimal(raw)
        moment = datetime.fromisoformat(raw)
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    except (binascii.Error, ValueError, InvalidOperation) as exc:
        raise CodecError(f"bad {tag} value {raw!r}: {exc}") from None


# -- records ----------------------------------------------------------------------------


def properties_dict(props: Properties) -> dict[str, Any]:
    """The basic properties that are set, without headers, as plain Python values."""
    found: dict[str, Any] = {}
    for name in PROPERTY_NAMES:
        value = getattr(props, name, None)
        if value is not None and value != "":
            found[name] = value
    return found


def dumps(queue: str, body: bytes, props: Properties) -> str:
    """One dead letter as one line of JSON (no newline)."""
    record = {
        "leveret": FORMAT,
        "queue": queue,
        "body": base64.b64encode(body).decode("ascii"),
        "properties": {k: to_json(v) for k, v in properties_dict(props).items()},
        "headers": {
            str(k): to_json(v) for k, v in (props.headers or {}).items() if k not in DELIVERY_STATE
        },
    }
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class Record:
    """A dead letter read back from a line: its queue, body, properties and headers."""

    __slots__ = ("body", "headers", "properties", "queue")

    def __init__(
        self, queue: str, body: bytes, properties: dict[str, Any], headers: dict[str, Any]
    ) -> None:
        self.queue = queue
        self.body = body
        self.properties = properties
        self.headers = headers

    def amqp_properties(self) -> ExactProperties:
        return ExactProperties(headers=self.headers, **self.properties)


def loads(line: str) -> Record:
    """Read one line written by ``dumps``; ``CodecError`` says what is wrong with it."""
    try:
        return _record(line)
    except RecursionError:
        # Python's JSON reader, and reading values back, recurse; an AMQP header
        # nested this deeply could not have been exported in the first place.
        raise CodecError("nested too deeply to be a dead letter") from None


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` deep (without recursing)."""
    level: list[Any] = [value]
    for _ in range(limit + 1):
        level = [
            child
            for v in level
            if isinstance(v, list | dict)
            for child in (v.values() if isinstance(v, dict) else v)
        ]
        if not level:
            return False
    return True


def _record(line: str) -> Record:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CodecError(f"not JSON: {exc}") from None
    if _deeper_than(data, MAX_DEPTH):
        raise CodecError(f"nested too deeply to be a dead letter (over {MAX_DEPTH} levels)")
    if not isinstance(data, dict) or data.get("leveret") != FORMAT:
        raise CodecError(f'not a dead-letter record (expected "leveret": "{FORMAT}")')
    queue, body, props, headers = (data.get(k) for k in ("queue", "body", "properties", "headers"))
    if not isinstance(queue, str) or not queue:
        raise CodecError('"queue" must be a non-empty string')
    if not isinstance(body, str):
        raise CodecError('"body" must be a base64 string')
    if not isinstance(props, dict) or not isinstance(headers, dict):
        raise CodecError('"properties" and "headers" must be objects')
    unknown = sorted(set(props) - set(PROPERTY_NAMES))
    if unknown:
        raise CodecError(f"unknown properties {unknown}; known: {', '.join(PROPERTY_NAMES)}")
    try:
        raw_body = base64.b64decode(body, validate=True)
    except binascii.Error as exc:
        raise CodecError(f'"body" is not base64: {exc}') from None
    properties = {k: from_json(v) for k, v in props.items()}
    for name, value in properties.items():
        wanted = int if name in _INT_PROPERTIES else datetime if name == "timestamp" else str
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise CodecError(f"property {name} must be a {wanted.__name__}, got {value!r}")
    return Record(queue, raw_body, properties, {k: from_json(v) for k, v in headers.items()})
