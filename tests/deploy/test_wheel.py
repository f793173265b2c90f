"""The wheel installs the package ``leveret`` and nothing named ``broker``."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def build_wheel(out: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return next(out.glob("leveret-*.whl"))


def test_the_wheel_holds_only_the_leveret_package(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"leveret"}
    assert "leveret/py.typed" in names, "typed for mypy users"
    assert "leveret/amqp/__init__.py" in names
    assert "leveret/ops/__init__.py" in names


def test_installed_alone_leveret_imports_and_broker_does_not(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "dist")
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    # The dependencies come from this environment; the project's own tree is not on
    # the path (the working directory is elsewhere and PYTHONPATH names only these).
    deps = sysconfig.get_paths()["purelib"]
    env = {"PYTHONPATH": f"{target}:{deps}", "PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}
    probe = (
        "import importlib.util, leveret, leveret.cli;"
        "print(leveret.__file__);"
        "print(importlib.util.find_spec('broker'))"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path[:0] = {[str(target), deps]!r}; {probe}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    assert out[0].startswith(str(target)), out
    assert out[1] == "None", "no package named broker is installed"
    version = subprocess.run(
        [sys.executable, "-m", "leveret", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert version.returncode == 0, version.stderr
    assert "worker" in version.stdout
