"""What the project ships: a wheel holding the package ``leveret`` and nothing named
``broker``, and an sdist that builds it, each installing cleanly from an empty venv on
every supported Python.

The installs fetch leveret's dependencies from the package index through pip's cache
(the first run downloads them, later runs take a few seconds per environment). A
supported version that is not installed here is skipped, and fails under ``CI=true``.
"""

from __future__ import annotations

import email
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import leveret
from tests.pythons import SUPPORTED, find_python

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel and the sdist, built once from this tree by the installed hatchling."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-d", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return {"wheel": next(out.glob("leveret-*.whl")), "sdist": next(out.glob("leveret-*.tar.gz"))}


def test_the_wheel_holds_only_the_leveret_package(dist: dict[str, Path]) -> None:
    names = zipfile.ZipFile(dist["wheel"]).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"leveret"}
    assert "leveret/py.typed" in names, "typed for mypy users"
    assert "leveret/amqp/__init__.py" in names
    assert "leveret/ops/__init__.py" in names
    assert f"leveret-{leveret.__version__}.dist-info/licenses/LICENSE" in names


def test_the_metadata_declares_every_supported_python(dist: dict[str, Path]) -> None:
    wheel = zipfile.ZipFile(dist["wheel"])
    meta = email.message_from_bytes(wheel.read(f"leveret-{leveret.__version__}.dist-info/METADATA"))
    assert meta["Version"] == leveret.__version__, "one version, read from leveret._version"
    assert meta["Requires-Python"] == f">={SUPPORTED[0]}"
    classifiers = meta.get_all("Classifier") or []
    declared = {c.rsplit(" :: ", 1)[1] for c in classifiers if c.count("::") == 2 and "3." in c}
    assert declared == set(SUPPORTED), classifiers
    assert "Typing :: Typed" in classifiers
    assert meta["License-Expression"] == "MIT"


def test_the_sdist_holds_the_package_and_what_builds_it(dist: dict[str, Path]) -> None:
    with tarfile.open(dist["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "PKG-INFO"} <= names
    assert "broker/leveret/__init__.py" in names
    assert not {n for n in names if n.startswith(("tests/", "deploy/", "bench/", "tasks/"))}


def test_installed_alone_leveret_imports_and_broker_does_not(
    dist: dict[str, Path], tmp_path: Path
) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "-q", "--no-deps"),
            *("--target", str(target), str(dist["wheel"])),
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


#: Run in the fresh environment, outside the repository: the installed package, its
#: version, and the uvloop extra's event loop.
PROBE = """
import asyncio, leveret
from leveret.ops import loops
async def name(): return loops.describe(asyncio.get_running_loop())
print(leveret.__file__)
print(leveret.__version__)
print(loops.run(name(), "uvloop"))
"""


def install_and_run(python: Path, artifact: Path, where: Path) -> dict[str, str]:
    """A fresh venv of ``python`` with ``artifact`` (and the uvloop extra) installed
    from the package index; what its ``leveret`` says."""
    venv = where / "venv"
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True, timeout=120)
    bin_ = venv / "bin"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [
            str(bin_ / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            f"leveret[uvloop] @ {artifact.as_uri()}",
        ],
        check=True,
        capture_output=True,
        timeout=600,
        env=env,
        cwd=where,
    )

    def run(*command: str) -> str:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=120, env=env, cwd=where, check=False
        )
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    return {
        "probe": run(str(bin_ / "python"), "-W", "error", "-c", PROBE),
        "help": run(str(bin_ / "leveret"), "--help"),
        "version": run(str(bin_ / "leveret"), "--version"),
        "check": run(str(bin_ / "python"), "-m", "pip", "check"),
    }


@pytest.mark.parametrize("version", SUPPORTED)
def test_the_wheel_and_the_sdist_install_into_an_empty_venv(
    version: str, dist: dict[str, Path], tmp_path: Path
) -> None:
    python = find_python(version)
    if python is None:
        reason = f"Python {version} is not installed (pyenv install {version})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    kinds = ("wheel", "sdist")
    for kind in kinds:
        (tmp_path / kind).mkdir()
    with ThreadPoolExecutor(len(kinds)) as pool:
        results = dict(
            zip(
                kinds,
                pool.map(lambda k: install_and_run(python, dist[k], tmp_path / k), kinds),
                strict=True,
            )
        )
    for kind, said in results.items():
        where, installed_version, loop = said["probe"].split("\n")[:3]
        assert "site-packages" in where, (kind, where)
        assert str(ROOT) not in where, (kind, where)
        assert installed_version == leveret.__version__, kind
        assert loop.startswith("uvloop "), kind
        assert "worker" in said["help"], kind
        assert "dlq" in said["help"], kind
        assert said["version"].startswith(f"leveret {leveret.__version__} (CPython {version}."), (
            kind,
            said["version"],
        )
        assert "No broken requirements" in said["check"], (kind, said["check"])
