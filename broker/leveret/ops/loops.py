"""Which event loop a worker runs on: uvloop where it is installed, else asyncio's own.

uvloop (``pip install 'leveret[uvloop]'``) is a drop-in loop written on libuv; the
worker's hot path is the loop's own (socket reads, callbacks, timers), so it runs
faster on it (see bench/RESULTS.md). ``auto`` takes it when it can be imported, so an
image that installs the extra uses it without a flag; ``asyncio`` opts out, and
``uvloop`` insists (a clear error if it is missing, rather than a quiet fallback).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from importlib import metadata
from typing import Any, Literal, TypeVar, get_args

from leveret.errors import ConfigError

Loop = Literal["auto", "uvloop", "asyncio"]
LOOPS: tuple[str, ...] = get_args(Loop)

T = TypeVar("T")


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for ``asyncio.Runner``; None means asyncio's default loop."""
    if choice not in LOOPS:
        raise ConfigError(f"unknown event loop {choice!r}: choose one of {', '.join(LOOPS)}")
    if choice == "asyncio":
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                "the uvloop event loop was asked for but uvloop is not installed: "
                "pip install 'leveret[uvloop]', or use --loop auto or asyncio"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """``asyncio.run(main)`` on the chosen loop (``asyncio.Runner`` takes a factory on
    every supported Python; ``uvloop.install`` is deprecated from 3.12)."""
    try:
        factory = loop_factory(choice)
    except ConfigError:
        main.close()  # never started: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def describe(loop: asyncio.AbstractEventLoop) -> str:
    """What a log line or a bench row should say about the running loop."""
    module = type(loop).__module__.split(".")[0]
    if module == "uvloop":
        return f"uvloop {metadata.version('uvloop')}"
    return "asyncio"
