"""Export files: written whole or not at all, read twice (check, then publish)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from leveret.errors import ConfigError


async def settle(
    pending: list[Any], on_progress: Callable[[int], None] | None, done_before: int
) -> int:
    """Await a window of publishes in order; the first failure stops the import."""
    done = 0
    try:
        results = await asyncio.gather(*pending, return_exceptions=True)
    finally:
        pending.clear()
    for result in results:
        if isinstance(result, BaseException):
            raise result
        done += 1
    if on_progress is not None:
        on_progress(done_before + done)
    return done


def source_name(source: str | Path | TextIO) -> str:
    if isinstance(source, str | Path):
        return "standard input" if str(source) == "-" else str(source)
    return getattr(source, "name", "input")


def read_lines(source: str | Path | TextIO) -> Callable[[], Iterator[str]]:
    """A way to read the input twice: files are reopened, streams buffered."""
    if isinstance(source, str | Path) and str(source) != "-":
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"no such file: {path}")

        def from_file() -> Iterator[str]:
            with path.open(encoding="utf-8") as handle:
                yield from handle

        return from_file
    stream = sys.stdin if isinstance(source, str | Path) else source
    buffered = stream.read().splitlines()
    return lambda: iter(buffered)


@contextlib.contextmanager
def atomic_output(target: str | Path | TextIO) -> Iterator[TextIO]:
    """A file written in full or not at all (renamed into place at the end)."""
    if not isinstance(target, str | Path):
        yield target
        return
    if str(target) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    path = Path(target)
    partial = path.with_name(path.name + ".partial")
    handle: io.TextIOWrapper = partial.open("w", encoding="utf-8")
    try:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        partial.replace(path)
    except BaseException:
        handle.close()
        partial.unlink(missing_ok=True)
        raise
