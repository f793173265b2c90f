"""``leveret`` as a subprocess, as an operator or a Deployment runs it, and its output.

Every subprocess runs ``python -m leveret`` with this interpreter from the repository
root, with the root on PYTHONPATH, so that it imports the tasks of ``tests.apps`` the
way a worker imports a service's module.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from tests.support import ROOT


def leveret_command(*args: str) -> list[str]:
    """``python -m leveret ARGS`` with the interpreter running the tests."""
    return [sys.executable, "-m", "leveret", *args]


def leveret_env(
    url: str | None = None, namespace: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """This process's environment, pointed at a broker and a namespace, plus ``extra``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if url is not None:
        env["LEVERET_URL"] = url
    if namespace is not None:
        env["LEVERET_NAMESPACE"] = namespace
    env.update(extra or {})
    return env


def cli(
    url: str,
    namespace: str,
    *args: str,
    stdin: str | None = None,
    timeout: float = 90,
) -> subprocess.CompletedProcess[str]:
    """Run ``leveret ARGS`` to the end against the test's namespace; wide enough that
    tables are not wrapped."""
    return subprocess.run(
        leveret_command(*args),
        env=leveret_env(url, namespace, {"COLUMNS": "200"}),
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def popen_cli(url: str, namespace: str, *args: str) -> subprocess.Popen[bytes]:
    """Start ``leveret ARGS`` against the test's namespace, for a test that watches or
    kills it while it runs; its errors are kept on a pipe."""
    return subprocess.Popen(
        leveret_command(*args),
        env=leveret_env(url, namespace),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def alive(pid: int) -> bool:
    """Whether a process of that id runs; a zombie (ended, not yet reaped) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        # The state follows the command name, which is in parentheses and may hold spaces.
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


class Output:
    """Reads a process's output on a thread, so its pipe never fills and blocks it.

    One reader per process: ``Output(proc)`` returns the reader already attached.
    """

    _readers: ClassVar[weakref.WeakKeyDictionary[subprocess.Popen[bytes], Output]] = (
        weakref.WeakKeyDictionary()
    )

    def __new__(cls, proc: subprocess.Popen[bytes]) -> Output:
        reader = cls._readers.get(proc)
        if reader is None:
            reader = super().__new__(cls)
            cls._readers[proc] = reader
        return reader

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        if hasattr(self, "_thread"):
            return
        assert proc.stdout is not None
        self.lines: list[str] = []
        self._stream = proc.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in self._stream:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def join(self, seconds: float = 30.0) -> None:
        """Wait until the process's end of output has been read (after it exited)."""
        self._thread.join(seconds)

    def records(self) -> list[dict[str, Any]]:
        """The lines that are JSON log records."""
        found = []
        for line in self.lines:
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    found.append(json.loads(line))
        return found

    @property
    def text(self) -> str:
        return "\n".join(self.lines)
