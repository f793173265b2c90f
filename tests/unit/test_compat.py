"""The clients' private details: checked, named when they change, not patched at import."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from types import CodeType, FunctionType
from typing import Any

import aio_pika
import aiormq
import pytest
from aiormq.abc import ChannelFrame
from aiormq.connection import FrameReceiver
from pamqp.commands import Basic

from leveret.amqp import compat, frames_out
from leveret.amqp.consume import Acker, Settle
from leveret.amqp.publish import Batcher
from leveret.errors import IncompatibleClient

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_clients_have_every_detail_leveret_relies_on() -> None:
    assert compat.mismatches() == []
    compat.check_shape()


# -- a release that renamed something --------------------------------------------------


def _rename_code(code: CodeType, old: str, new: str) -> CodeType:
    consts = tuple(
        _rename_code(c, old, new) if isinstance(c, CodeType) else c for c in code.co_consts
    )
    names = tuple(new if n == old else n for n in code.co_names)
    return code.replace(co_names=names, co_consts=consts)


def _rename_value(value: Any, old: str, new: str) -> Any:
    if isinstance(value, FunctionType):
        copy = FunctionType(
            _rename_code(value.__code__, old, new),
            value.__globals__,
            value.__name__,
            value.__defaults__,
            value.__closure__,
        )
        copy.__kwdefaults__ = value.__kwdefaults__
        copy.__qualname__ = value.__qualname__
        return copy
    if isinstance(value, staticmethod | classmethod):
        return type(value)(_rename_value(value.__func__, old, new))
    if isinstance(value, property):
        return property(*(_rename_value(f, old, new) for f in (value.fget, value.fset, value.fdel)))
    return value


def renamed(cls: type, old: str, new: str, *, flat: bool = False) -> type:
    """A copy of ``cls`` as a release that renamed ``old`` to ``new`` would ship it.

    The attribute, and every use of the name in the class's own methods, is renamed in
    the copy; ``cls`` itself is left as it is. ``flat`` copies what the class inherits
    too (for a name its base classes define), onto a copy based on ``object``.
    """
    layers = [k for k in reversed(cls.__mro__) if k is not object] if flat else [cls]
    slots = [name for k in layers for name in vars(k).get("__slots__", ())]
    skip = {"__dict__", "__weakref__", "__abstractmethods__", "_abc_impl", *slots}
    namespace = {
        (new if key == old else key): _rename_value(value, old, new)
        for k in layers
        for key, value in vars(k).items()
        if key not in skip
    }
    namespace["__qualname__"] = cls.__qualname__
    if slots:
        namespace["__slots__"] = [new if s == old else s for s in slots]
    bases = (object,) if flat else cls.__bases__
    return type(cls)(cls.__name__, bases, namespace)


RENAMES = [
    ("channel", aiormq.Channel, "write_queue", "batched publishing"),
    ("channel", aiormq.Channel, "confirmations", "batched publishing"),
    ("channel", aiormq.Channel, "message_id_delivery_tag", "batched publishing"),
    ("channel", aiormq.Channel, "max_content_size", "batched publishing"),
    ("channel", aiormq.Channel, "delivery_tag", "batched publishing"),
    ("receiver", FrameReceiver, "started", "frame reader"),
    ("receiver", FrameReceiver, "reader", "frame reader"),
    ("receiver", FrameReceiver, "get_frame", "frame reader"),
    ("connection", aiormq.Connection, "HEARTBEAT_GRACE_MULTIPLIER", "heartbeat grace"),
    ("pika_connection", aio_pika.Connection, "transport", "connection state"),
    ("properties", Basic.Properties, "encode_property", "exact headers"),
    ("properties", Basic.Properties, "message_type", "frame reader"),
]


@pytest.mark.parametrize(("shape", "cls", "attribute", "feature"), RENAMES)
def test_a_renamed_attribute_is_named_with_the_version(
    shape: str, cls: type, attribute: str, feature: str
) -> None:
    flat = cls is Basic.Properties  # its methods are pamqp's BasicProperties'
    changed = compat.Shapes(**{shape: renamed(cls, attribute, attribute + "_v2", flat=flat)})
    with pytest.raises(IncompatibleClient) as raised:
        compat.check_shape(changed)
    message = str(raised.value)
    assert f".{attribute} (" in message
    assert f"aiormq {metadata.version('aiormq')}" in message
    assert {m.feature.label for m in compat.mismatches(changed)} >= {feature}


def test_a_renamed_write_queue_takes_both_its_users_to_their_fallbacks() -> None:
    changed = compat.Shapes(channel=renamed(aiormq.Channel, "write_queue", "outgoing"))
    found = {m.feature for m in compat.mismatches(changed)}
    assert found == {compat.Feature.BATCHED_PUBLISHING, compat.Feature.DIRECT_ACKS}


def test_renaming_a_copy_leaves_the_real_class_alone() -> None:
    renamed(aiormq.Channel, "write_queue", "outgoing")
    assert compat.mismatches() == []


# -- each feature falls back to aiormq's public path -----------------------------------


class BareChannel:
    """A channel with aiormq's public interface only."""

    number = 3
    is_closed = False

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bool]] = []

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        self.sent.append(("ack", delivery_tag, multiple))

    async def basic_nack(
        self, delivery_tag: int, multiple: bool = False, requeue: bool = True, wait: bool = True
    ) -> None:
        self.sent.append(("nack", delivery_tag, multiple))


class FullChannel(BareChannel):
    """A channel with the private state the batcher and the acker use."""

    def __init__(self) -> None:
        super().__init__()
        self.write_queue: asyncio.Queue[ChannelFrame] = asyncio.Queue(maxsize=10)
        self.delivery_tag = 0
        self.confirmations: dict[int, asyncio.Future[Any]] = {}
        self.message_id_delivery_tag: dict[str, int] = {}
        self.max_content_size = 131_064

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()


async def test_without_a_write_queue_acks_go_through_basic_ack() -> None:
    channel: Any = BareChannel()
    acker = Acker(channel)
    acker.started(1)
    acker.started(2)
    acker.finished(2, Settle.REQUEUE)
    acker.finished(1, Settle.ACK)
    for _ in range(3):
        await asyncio.sleep(0)
    assert channel.sent == [("nack", 2, False), ("ack", 1, True)]


async def test_with_a_write_queue_acks_are_written_directly() -> None:
    channel: Any = FullChannel()
    acker = Acker(channel)
    acker.started(1)
    acker.finished(1, Settle.ACK)
    await asyncio.sleep(0)
    assert channel.sent == []
    frame = channel.write_queue.get_nowait()
    assert frame.payload == ChannelFrame.marshall(3, [Basic.Ack(1, multiple=True)]).payload


async def test_without_confirm_state_there_is_no_batcher() -> None:
    assert Batcher.open(BareChannel()) is None  # type: ignore[arg-type]


async def test_a_batched_publish_registers_its_confirm_as_basic_publish_does() -> None:
    channel: Any = FullChannel()
    batcher = Batcher.open(channel)
    assert batcher is not None
    props = Basic.Properties(message_id="m-1", delivery_mode=2)
    confirmation = batcher.publish("x", "q", b"{}", props)
    batcher.flush()
    assert channel.confirmations == {1: confirmation}
    assert channel.message_id_delivery_tag == {"m-1": 1}
    written = channel.write_queue.get_nowait().payload
    assert written == b"".join(frames_out.publish(3, "x", "q", b"{}", props, 131_064))
    confirmation.set_result(Basic.Ack(1))
    await asyncio.sleep(0)
    assert channel.message_id_delivery_tag == {}


@pytest.fixture
def fresh_verdict() -> Iterator[None]:
    """Forget which features this process found usable, before and after the test."""
    compat._unusable.cache_clear()
    yield
    compat._unusable.cache_clear()


async def test_a_changed_client_is_named_once_and_its_features_fall_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fresh_verdict: None
) -> None:
    changed = compat.Shapes(channel=renamed(aiormq.Channel, "write_queue", "outgoing"))
    found = compat.mismatches(changed)
    monkeypatch.setattr(compat, "mismatches", lambda: found)
    channel: Any = FullChannel()
    with caplog.at_level("WARNING", logger="leveret.amqp.compat"):
        assert compat.confirm_writer(channel) is None
        assert compat.frame_writer(channel) is None
        assert Batcher.open(channel) is None
    assert compat.usable(compat.Feature.FRAME_READER)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2
    version = f"aiormq {metadata.version('aiormq')}"
    assert all("Channel.write_queue" in w and version in w for w in warned)


# -- nothing is patched at import --------------------------------------------------------

IMPORT_ALL = """
import asyncio, importlib, json, pkgutil
import aiormq
from aiormq.connection import FrameReceiver

stock = (FrameReceiver.get_frame, aiormq.Connection.HEARTBEAT_GRACE_MULTIPLIER)
def now():
    return (FrameReceiver.get_frame, aiormq.Connection.HEARTBEAT_GRACE_MULTIPLIER)

import leveret
for module in pkgutil.walk_packages(leveret.__path__, "leveret."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
after_import = now() == stock
app = leveret.App(url="amqp://guest:guest@127.0.0.1:1/", connect_deadline=0.2)
after_app = now() == stock

async def connect():
    for _ in range(2):  # the second connect changes nothing more
        try:
            await app.connector.get(deadline=0.2)
        except leveret.BrokerUnavailable:
            pass

asyncio.run(connect())
print(json.dumps({
    "after_import": after_import,
    "after_app": after_app,
    "reader_replaced": FrameReceiver.get_frame is not stock[0],
    "grace": [stock[1], aiormq.Connection.HEARTBEAT_GRACE_MULTIPLIER],
}))
"""


@pytest.mark.parametrize("stock_frames", ["", "1"])
def test_importing_leveret_changes_nothing_in_aiormq_until_a_connection_opens(
    stock_frames: str,
) -> None:
    """In a process of its own: the connections of other tests have already opened here."""
    env = {**os.environ, compat.STOCK_FRAMES_ENV: stock_frames}
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["after_import"], "importing leveret changed aiormq"
    assert seen["after_app"], "constructing an App changed aiormq"
    assert seen["reader_replaced"] is (stock_frames != "1")
    assert seen["grace"] == [3, compat.HEARTBEAT_GRACE_MULTIPLIER]
