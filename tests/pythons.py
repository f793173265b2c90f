"""``make test-pythons``: the unit suite and an integration subset on every other
supported Python, one virtual environment each, with one summary line per version.

The whole suite runs on the interpreter of ``.venv`` (``make test``); this adds the
versions that interpreter is not. Each version gets ``.venv-3.X``, created once and
reinstalled only when pyproject.toml changes (pip's cache keeps that quick). An
interpreter is found as ``python3.X`` on PATH, else under pyenv's root; a version that
is not installed is skipped with how to get it, and fails the run under ``CI=true``.

The subset is what leans on details that change between Python versions: confirmed
publishing, the delay ladder, retries ending in dead letters, a SIGKILLed worker,
SIGTERM, the dlq command, the event loops (asyncio and uvloop), and — in the unit
suite — the frame codec checked against aiormq's own. The suite turns warnings into
errors, so a DeprecationWarning on a newer Python fails the run.

    python -m tests.pythons [--versions 3.12,3.13] [PYTEST ARGS...]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Every Python version leveret supports (pyproject.toml's classifiers say the same).
SUPPORTED = ("3.11", "3.12", "3.13")

SUBSET = (
    "tests/unit",
    "tests/integration/test_publishing.py",
    "tests/integration/test_delays.py::test_a_short_delay_overtakes_a_long_one",
    "tests/integration/test_delays.py::test_delays_beyond_the_ladder_and_naive_times_are_refused",
    "tests/integration/test_retries.py",
    "tests/integration/test_ack_after_completion.py::test_sigkill_mid_task_leaves_it_for_the_next_worker",
    "tests/integration/test_shutdown.py",
    "tests/integration/test_dlq_cli.py::test_list_summary_and_show",
    "tests/integration/test_dlq_cli.py::test_replay_and_purge",
    "tests/integration/test_event_loops.py",
)


@dataclass
class Outcome:
    version: str
    status: str  # "passed", "failed" or "skipped"
    line: str


def running_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def pyenv_roots() -> list[Path]:
    roots = [Path(os.environ["PYENV_ROOT"])] if os.environ.get("PYENV_ROOT") else []
    return [*roots, Path.home() / ".pyenv"]


def find_python(version: str) -> Path | None:
    """``python3.X`` on PATH, else the newest 3.X.* under pyenv's root."""
    on_path = shutil.which(f"python{version}")
    # pyenv's shims are on PATH for every version it knows, installed or not: ask the
    # interpreter itself whether it runs.
    if on_path and _runs(Path(on_path), version):
        return Path(on_path)
    for root in pyenv_roots():
        found = sorted(
            (root / "versions").glob(f"{version}.*/bin/python{version}"),
            key=lambda p: [int(x) for x in re.findall(r"\d+", p.parts[-3])],
        )
        for candidate in reversed(found):
            if _runs(candidate, version):
                return candidate
    return None


def _runs(python: Path, version: str) -> bool:
    try:
        out = subprocess.run(
            [str(python), "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return False
    return out.returncode == 0 and out.stdout.strip() == version


def environment(version: str, python: Path) -> Path:
    """``.venv-3.X`` with the project (editable) and its dev tools, made when missing
    or when pyproject.toml changed since."""
    venv = ROOT / f".venv-{version}"
    stamp = venv / ".installed-stamp"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest() + f" {python}"
    if stamp.is_file() and stamp.read_text() == wanted and (venv / "bin" / "python").exists():
        return venv
    print(f"python {version}: installing into {venv.name} (with {python})", flush=True)
    subprocess.run([str(python), "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True, cwd=ROOT)
    stamp.write_text(wanted)
    return venv


def run_version(version: str, pytest_args: list[str], ci: bool) -> Outcome:
    python = find_python(version)
    if python is None:
        how = f"install it (pyenv install {version}) or put python{version} on PATH"
        status = "failed" if ci else "skipped"
        return Outcome(version, status, f"python {version}: {status}: not installed; {how}")
    began = time.monotonic()
    try:
        venv = environment(version, python)
    except subprocess.CalledProcessError as exc:
        return Outcome(version, "failed", f"python {version}: installing failed ({exc})")
    exact = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    command = [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-m", "not slow"]
    command += [*SUBSET, *pytest_args]
    print(f"python {exact}: {' '.join(command[1:])}", flush=True)
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    last = ""
    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.strip():
            last = line.strip()
    code = proc.wait()
    seconds = time.monotonic() - began
    summary = last.strip("= ")  # pytest's own count: "230 passed, 1 skipped in 190.31s"
    status = "passed" if code == 0 else "failed"
    return Outcome(version, status, f"python {exact}: {status}: {summary} ({seconds:.0f} s in all)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.pythons", description=__doc__)
    parser.add_argument(
        "--versions",
        default=",".join(v for v in SUPPORTED if v != running_version()),
        help="comma-separated Python versions (default: the supported ones this "
        "interpreter is not)",
    )
    args, pytest_args = parser.parse_known_args(argv)
    ci = os.environ.get("CI", "").lower() == "true"
    versions = [v.strip() for v in args.versions.split(",") if v.strip()]
    unknown = [v for v in versions if v not in SUPPORTED]
    if unknown:
        parser.error(f"not a supported version: {', '.join(unknown)} (supported: {SUPPORTED})")
    outcomes = [run_version(v, pytest_args, ci) for v in versions]
    print()
    for outcome in outcomes:
        print(outcome.line)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
