"""Every private detail of aiormq, aio-pika and pamqp that leveret relies on, in one place.

Four things here are faster than the client's public path (frames read with two reads,
the publishes of a loop turn written as one frame, acknowledgements written without a
task each), one tunes aiormq (how long a silent broker is trusted), one reads state
aio-pika does not report reliably (whether the connection underneath is open), and
one keeps header values exact. None of them is aiormq's public API, so a release can
rename what they use and break every connection at run time. pyproject.toml bounds
the versions to those this was written against; should another one be installed,
``mismatches()`` finds what changed before anything is used, by reading the classes
(their attributes, and the attributes their methods store and call), not by trying:

- frame reader: aiormq's ``FrameReceiver.get_frame``, ``.reader`` and ``.started``, and
  the slots of pamqp's ``Basic.Deliver`` and ``Basic.Properties``; else aiormq's reader.
- heartbeat grace: ``aiormq.Connection.HEARTBEAT_GRACE_MULTIPLIER``; else aiormq's 3.
- batched publishing: a channel's ``delivery_tag``, ``confirmations``,
  ``message_id_delivery_tag``, ``max_content_size`` and ``write_queue``, and
  ``ChannelFrame``; else ``Channel.basic_publish``.
- direct acks: a channel's ``write_queue`` and ``ChannelFrame``; else ``basic_ack``.
- connection state: aio-pika's ``Connection.transport.connection``; else its
  ``connected`` event.
- exact headers: pamqp's ``Basic.Properties.marshal`` encoding each property with
  ``encode_property`` (which ``ExactProperties`` overrides); else pamqp's encoding.

Each feature whose shape differs falls back on its own, with one warning naming the
attribute and the versions; ``check_shape()`` raises instead (the unit tests run it,
so a new release is caught in CI). Nothing is changed at import: ``prepare()`` installs
the frame reader and the heartbeat grace when the first connection opens.
"""

from __future__ import annotations

import asyncio
import dataclasses
import dis
import functools
import inspect
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from importlib import metadata
from types import CodeType
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq
from aio_pika.abc import AbstractConnection
from aiormq.abc import AbstractChannel, ChannelFrame, ConfirmationFrameType
from aiormq.connection import FrameReceiver
from pamqp.commands import Basic

from leveret.amqp import frames_in
from leveret.errors import IncompatibleClient

log = logging.getLogger(__name__)

# aiormq gives up on a silent broker only after 3 x (heartbeat + 1) s, checked every
# heartbeat / 2 s: 18-20 s with a 5 s heartbeat (measured behind a black-holing
# proxy). RabbitMQ drops a silent client after two heartbeat intervals; do the same,
# so a dead peer is noticed within three heartbeats (12-14 s for 5 s).
HEARTBEAT_GRACE_MULTIPLIER = 2

#: Set to 1 (or true, yes) to keep aiormq's own frame reader, to rule this one out.
STOCK_FRAMES_ENV = "LEVERET_STOCK_FRAMES"


class Feature(Enum):
    """What leveret does with a private detail, and what it does without it."""

    FRAME_READER = ("frame reader", "aiormq's own frame reader")
    HEARTBEAT_GRACE = ("heartbeat grace", "aiormq's grace of 3 heartbeats")
    BATCHED_PUBLISHING = ("batched publishing", "Channel.basic_publish, a message per loop turn")
    DIRECT_ACKS = ("direct acks", "Channel.basic_ack and basic_nack, a task per ack")
    CONNECTION_STATE = ("connection state", "aio-pika's connected event")
    EXACT_HEADERS = ("exact headers", "pamqp's header encoding: floats as 32 bits, no bytes")

    def __init__(self, label: str, fallback: str) -> None:
        self.label = label
        self.fallback = fallback


@dataclass(frozen=True)
class Mismatch:
    """One attribute or behaviour a feature needs that the installed library lacks."""

    feature: Feature
    missing: str  # e.g. "aiormq.channel.Channel.write_queue (stored by the channel)"

    def __str__(self) -> str:
        return f"{self.missing}: {self.feature.label} falls back to {self.feature.fallback}"


def versions() -> str:
    """The installed client libraries, for messages about their shape."""
    found = []
    for name in ("aiormq", "aio-pika", "pamqp"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (version unknown)")
    return ", ".join(found)


# -- reading the classes ---------------------------------------------------------------


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _codes(value: object) -> Iterator[CodeType]:
    """The code of a function, method, property or wrapped function, nested code too."""
    if isinstance(value, staticmethod | classmethod):
        value = value.__func__
    if isinstance(value, property):
        for part in (value.fget, value.fset, value.fdel):
            yield from _codes(part)
        return
    if callable(value):
        try:
            value = inspect.unwrap(value)
        except ValueError:  # a __wrapped__ chain that loops
            return
    code = getattr(value, "__code__", None)
    pending = [code] if isinstance(code, CodeType) else []
    while pending:
        code = pending.pop()
        yield code
        pending += [c for c in code.co_consts if isinstance(c, CodeType)]


def _methods(cls: type, skip: Sequence[str] = ()) -> Iterator[tuple[str, CodeType]]:
    for klass in cls.__mro__:
        if klass is object:
            continue
        for name, value in vars(klass).items():
            if name not in skip:
                for code in _codes(value):
                    yield name, code


def _stored(cls: type) -> set[str]:
    """The attributes the class's methods assign (``self.x = ...``), and its dataclass fields.

    Instance attributes cannot be seen on the class itself; what its methods store is
    what its instances will have.
    """
    names = {
        ins.argval
        for _, code in _methods(cls)
        for ins in dis.get_instructions(code)
        if ins.opname == "STORE_ATTR"
    }
    if dataclasses.is_dataclass(cls):
        names |= {field.name for field in dataclasses.fields(cls)}
    return names


def _mentions(value: object, name: str) -> bool:
    """Whether the function's code (or its nested code) uses ``name``."""
    return any(name in code.co_names for code in _codes(value))


def _used_beyond(cls: type, name: str, skip: Sequence[str]) -> bool:
    return any(name in code.co_names for _, code in _methods(cls, skip))


# -- what each feature needs -------------------------------------------------------------


@dataclass(frozen=True)
class Shapes:
    """The classes whose shape leveret relies on (a test passes altered copies)."""

    connection: type = aiormq.Connection
    channel: type = aiormq.Channel
    receiver: type = FrameReceiver
    channel_frame: type = ChannelFrame
    pika_connection: type = aio_pika.Connection
    underlay: type = aio_pika.abc.UnderlayConnection
    properties: type = Basic.Properties
    deliver: type = Basic.Deliver


#: The channel state the batcher reads and writes as ``basic_publish`` does.
CONFIRM_STATE = (
    "delivery_tag",
    "confirmations",
    "message_id_delivery_tag",
    "max_content_size",
    "write_queue",
)


def _frame_reader(s: Shapes) -> Iterator[str]:
    rx = _name(s.receiver)
    if not inspect.iscoroutinefunction(getattr(s.receiver, "get_frame", None)):
        yield f"{rx}.get_frame (a coroutine method, replaced by ours)"
    elif not _mentions(getattr(s.receiver, "__anext__", None), "get_frame"):
        yield f"{rx}.__anext__ (no longer reads through get_frame)"
    stored = _stored(s.receiver)
    for attr in ("reader", "started"):
        if attr not in stored:
            yield f"{rx}.{attr} (stored by the receiver)"
    if not any("FrameReceiver" in code.co_names for _, code in _methods(s.connection)):
        yield f"{_name(s.connection)}.connect (no longer reads through FrameReceiver)"
    # frames_in builds these objects slot by slot, as pamqp's decoder leaves them.
    layouts = ((s.deliver, frames_in.DELIVER_FIELDS), (s.properties, frames_in.PROPERTY_FIELDS))
    for cls, fields in layouts:
        slots = set(getattr(cls, "__slots__", ()))
        for field in fields:
            if field not in slots:
                yield f"{_name(cls)}.{field} (a slot the frame reader fills)"
        for field in sorted(slots - set(fields)):
            yield f"{_name(cls)}.{field} (a new slot the frame reader would leave unset)"


def _heartbeat_grace(s: Shapes) -> Iterator[str]:
    value = getattr(s.connection, "HEARTBEAT_GRACE_MULTIPLIER", None)
    where = f"{_name(s.connection)}.HEARTBEAT_GRACE_MULTIPLIER"
    if not isinstance(value, int | float) or isinstance(value, bool):
        yield f"{where} (a number on the class)"
    elif not _mentions(getattr(s.connection, "__init__", None), "HEARTBEAT_GRACE_MULTIPLIER"):
        yield f"{where} (no longer read when a connection is made)"


def _channel_frame(s: Shapes) -> Iterator[str]:
    fields = (
        {f.name for f in dataclasses.fields(s.channel_frame)}
        if dataclasses.is_dataclass(s.channel_frame)
        else set()
    )
    for attr in ("payload", "should_close"):
        if attr not in fields:
            yield f"{_name(s.channel_frame)}.{attr} (a field)"


def _batched_publishing(s: Shapes) -> Iterator[str]:
    ch = _name(s.channel)
    stored = _stored(s.channel)
    for attr in CONFIRM_STATE:
        if attr not in stored:
            yield f"{ch}.{attr} (stored by the channel)"
    for attr in ("confirmations", "message_id_delivery_tag"):
        # The channel must still settle what we register there on ack, nack and return.
        if attr in stored and not _used_beyond(s.channel, attr, ("__init__", "basic_publish")):
            yield f"{ch}.{attr} (no longer read on confirms and returns)"
    if not callable(getattr(s.channel, "create_future", None)):
        yield f"{ch}.create_future"
    yield from _channel_frame(s)


def _direct_acks(s: Shapes) -> Iterator[str]:
    if "write_queue" not in _stored(s.channel):
        yield f"{_name(s.channel)}.write_queue (stored by the channel)"
    yield from _channel_frame(s)


def _connection_state(s: Shapes) -> Iterator[str]:
    if "transport" not in _stored(s.pika_connection):
        yield f"{_name(s.pika_connection)}.transport (stored by the connection)"
    if "connection" not in _stored(s.underlay):
        yield f"{_name(s.underlay)}.connection (a field)"


def _exact_headers(s: Shapes) -> Iterator[str]:
    where = _name(s.properties)
    encode = getattr(s.properties, "encode_property", None)
    try:
        params = list(inspect.signature(encode).parameters) if encode else []
    except (TypeError, ValueError):
        params = []
    if params != ["self", "name", "value"]:
        yield f"{where}.encode_property (a method of (self, name, value), overridden by ours)"
    elif not _mentions(getattr(s.properties, "marshal", None), "encode_property"):
        yield f"{where}.marshal (no longer encodes each property with encode_property)"


_CHECKS: dict[Feature, Callable[[Shapes], Iterator[str]]] = {
    Feature.FRAME_READER: _frame_reader,
    Feature.HEARTBEAT_GRACE: _heartbeat_grace,
    Feature.BATCHED_PUBLISHING: _batched_publishing,
    Feature.DIRECT_ACKS: _direct_acks,
    Feature.CONNECTION_STATE: _connection_state,
    Feature.EXACT_HEADERS: _exact_headers,
}


def mismatches(shapes: Shapes | None = None) -> list[Mismatch]:
    """Everything leveret relies on that ``shapes`` (the installed classes) lack."""
    s = shapes or Shapes()
    return [Mismatch(feature, miss) for feature, check in _CHECKS.items() for miss in check(s)]


def check_shape(shapes: Shapes | None = None) -> None:
    """Raise ``IncompatibleClient`` naming every detail the installed libraries lack."""
    found = mismatches(shapes)
    if found:
        listed = "; ".join(str(m) for m in found)
        raise IncompatibleClient(
            f"{versions()}: leveret relies on details these no longer have: {listed}. "
            "Install the versions leveret's pyproject.toml allows, or adapt "
            "leveret.amqp.compat to the new ones."
        )


@functools.cache
def _unusable() -> frozenset[Feature]:
    """The features whose details the installed libraries lack, found once per process."""
    found = mismatches()
    for mismatch in found:
        log.warning("%s: %s", versions(), mismatch)
    return frozenset(m.feature for m in found)


def usable(feature: Feature) -> bool:
    """Whether the installed libraries have what ``feature`` needs."""
    return feature not in _unusable()


# -- once per process: the frame reader and the heartbeat grace --------------------------

#: aiormq's own ``FrameReceiver.get_frame``, for the fallback and for comparisons.
STOCK_GET_FRAME: Callable[..., Any] | None = getattr(FrameReceiver, "get_frame", None)

_prepared = False


def prepare() -> None:
    """Install the frame reader and the heartbeat grace; called when a connection opens.

    Both apply to the whole process, as aiormq has no per-connection hook for them
    (the grace multiplier is read in ``Connection.__init__``, from the class). Only
    the first call does anything.
    """
    global _prepared
    if _prepared:
        return
    _prepared = True
    _unusable()  # a warning for each detail the installed libraries lack
    if os.environ.get(STOCK_FRAMES_ENV, "").lower() in ("1", "true", "yes"):
        log.info("%s is set: aiormq reads frames itself", STOCK_FRAMES_ENV)
    else:
        install_frame_reader()
    if usable(Feature.HEARTBEAT_GRACE):
        aiormq.Connection.HEARTBEAT_GRACE_MULTIPLIER = HEARTBEAT_GRACE_MULTIPLIER


async def get_frame(receiver: Any) -> tuple[int, int, Any]:
    """``FrameReceiver.get_frame``, reading with ``frames_in.read``.

    Relies on the receiver keeping its stream in ``reader`` (removed at its end, as
    aiormq's own does, which ends the iteration) and ``started`` (whether the broker
    got past the protocol header), and on ``__anext__`` calling ``get_frame``.
    """
    reader: asyncio.StreamReader = receiver.reader
    if reader.at_eof():
        del receiver.reader
        raise StopAsyncIteration
    if receiver.started:
        return await frames_in.read(reader)
    frame = await frames_in.read(reader, started=False)
    receiver.started = True
    return frame


def install_frame_reader() -> bool:
    """Read every aiormq connection's frames with ``get_frame``; False if aiormq changed."""
    if not usable(Feature.FRAME_READER):
        return False
    FrameReceiver.get_frame = get_frame  # type: ignore[method-assign,assignment]
    return True


def uninstall_frame_reader() -> None:
    """Back to aiormq's own reader (for comparisons)."""
    if STOCK_GET_FRAME is not None:
        FrameReceiver.get_frame = STOCK_GET_FRAME  # type: ignore[method-assign]


def frame_reader_installed() -> bool:
    return getattr(FrameReceiver, "get_frame", None) is get_frame


# -- per channel: writing frames and registering confirms ourselves ----------------------


class FrameWriter:
    """Hands frames to the connection's writer through the channel's ``write_queue``.

    ``basic_ack`` costs a coroutine (and a task, if not awaited) per acknowledgement;
    putting the frame on the queue the connection's writer reads costs neither.
    """

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        self._queue: asyncio.Queue[ChannelFrame] = channel.write_queue  # type: ignore[attr-defined]

    def write(self, frames: Sequence[bytes]) -> bool:
        """Queue encoded frames as one write; False (nothing queued) if the queue is full."""
        queue = self._queue
        if queue.full():
            return False
        payload = frames[0] if len(frames) == 1 else b"".join(frames)
        queue.put_nowait(ChannelFrame(payload=payload, should_close=False))
        return True


class ConfirmWriter(FrameWriter):
    """Registers a publish's confirmation as ``basic_publish`` does, without its lock.

    ``basic_publish`` holds the channel lock until each message reaches the socket,
    which lets one message through per loop turn. Registering the delivery tag, the
    confirmation future (resolved by the channel on ack, nack, return or close) and
    the message id (by which the channel matches a return) here lets a batcher write
    a loop turn's messages at once. Every publish on the channel must then come
    through here, so the delivery tags stay in the order the broker numbers them.
    """

    @property
    def max_content_size(self) -> int:
        """The largest body frame this channel's connection takes."""
        size: int = self.channel.max_content_size  # type: ignore[attr-defined]
        return size

    def confirmation(self, message_id: str) -> asyncio.Future[ConfirmationFrameType]:
        """Take the next delivery tag, and the future its confirm will resolve."""
        ch: Any = self.channel
        ch.delivery_tag += 1
        tag: int = ch.delivery_tag
        confirmation: asyncio.Future[ConfirmationFrameType] = ch.create_future()
        ch.confirmations[tag] = confirmation
        ids: dict[str, int] = ch.message_id_delivery_tag
        ids[message_id] = tag
        confirmation.add_done_callback(_forget(ids, message_id, tag))
        return confirmation


def _forget(ids: dict[str, int], message_id: str, tag: int) -> Callable[[object], None]:
    def forget(_: object) -> None:
        if ids.get(message_id) == tag:
            del ids[message_id]

    return forget


_warned: set[Feature] = set()


def _instance_has(feature: Feature, channel: object, attributes: Sequence[str]) -> bool:
    """Whether ``feature`` may be used on this very object (a subclass may differ)."""
    if not usable(feature):
        return False
    missing = [a for a in attributes if not hasattr(channel, a)]
    if missing and feature not in _warned:
        _warned.add(feature)
        log.warning(
            "%s: %s has no %s: %s falls back to %s",
            versions(),
            type(channel).__qualname__,
            ", ".join(missing),
            feature.label,
            feature.fallback,
        )
    return not missing


def frame_writer(channel: AbstractChannel) -> FrameWriter | None:
    """A writer for acknowledgements on ``channel``, or None to use ``basic_ack``."""
    if not _instance_has(Feature.DIRECT_ACKS, channel, ("write_queue",)):
        return None
    return FrameWriter(channel)


def confirm_writer(channel: AbstractChannel) -> ConfirmWriter | None:
    """A writer for batched publishes on ``channel``, or None to use ``basic_publish``."""
    if not _instance_has(Feature.BATCHED_PUBLISHING, channel, CONFIRM_STATE):
        return None
    return ConfirmWriter(channel)


# -- per connection ------------------------------------------------------------------------


def underlay_open(connection: AbstractConnection) -> bool:
    """Whether the aiormq connection under an aio-pika one is still open.

    aio-pika's ``is_closed`` turns true only after our own ``close()``: when the broker
    closes the connection (a restart, a forced close) it stays false. Its
    ``transport.connection`` (the aiormq connection) knows at once; without it,
    aio-pika's ``connected`` event, which its close callback clears.
    """
    if not usable(Feature.CONNECTION_STATE):
        return connection.connected.is_set()
    transport = connection.transport
    underlay = getattr(transport, "connection", None)
    return underlay is not None and not underlay.is_closed
