"""The worker's event loop: uvloop where installed, asyncio on request, clear errors."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from leveret import ConfigError
from leveret.cli import parser
from leveret.ops import loops
from leveret.ops.processes import Supervisor


async def loop_name() -> str:
    return loops.describe(asyncio.get_running_loop())


def test_auto_and_uvloop_run_on_uvloop_where_it_is_installed() -> None:
    assert loops.loop_factory("auto") is uvloop.new_event_loop
    assert loops.run(loop_name(), "auto").startswith("uvloop ")
    assert loops.run(loop_name(), "uvloop").startswith("uvloop ")


def test_asyncio_opts_out() -> None:
    assert loops.loop_factory("asyncio") is None
    assert loops.run(loop_name(), "asyncio") == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if it were not installed
    assert loops.loop_factory("auto") is None
    with pytest.raises(ConfigError, match=r"pip install 'leveret\[uvloop\]'"):
        loops.loop_factory("uvloop")


def test_an_unknown_loop_is_refused_and_its_coroutine_never_left_unawaited() -> None:
    with pytest.raises(ConfigError, match="auto, uvloop, asyncio"):
        loops.run(loop_name(), "trio")  # filterwarnings=error: a RuntimeWarning would fail


def test_processes_pass_the_loop_on_to_their_workers() -> None:
    args = parser().parse_args(["worker", "m:app", "--processes", "2", "--loop", "asyncio"])
    argv = Supervisor.from_args(args).argv
    assert argv[argv.index("--loop") + 1] == "asyncio"
