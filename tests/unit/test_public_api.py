"""The public surface is what ``leveret`` exports and what the docs show, and they agree."""

from __future__ import annotations

import builtins
import importlib
import re
from pathlib import Path

import pytest

import leveret

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "README.md"]


def documented_imports() -> list[tuple[str, str, str]]:
    """(file, module, name) of every ``from leveret... import ...`` in a docs code block."""
    found = []
    for path in DOCS:
        for block in re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S):
            for module, grouped, single in re.findall(
                r"^from (leveret[\w.]*) import (?:\(([^)]*)\)|([\w, ]+)$)", block, flags=re.M
            ):
                for name in re.split(r"[,\s]+", (grouped or single).strip()):
                    if name:
                        found.append((path.name, module, name))
    return found


@pytest.mark.parametrize(("doc", "module", "name"), documented_imports())
def test_every_import_the_docs_show_resolves(doc: str, module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name), f"{doc}: from {module} import {name}"


def test_the_docs_show_imports_at_all() -> None:
    assert len(documented_imports()) >= 10


def test_every_exported_name_exists_and_is_public() -> None:
    for name in leveret.__all__:
        assert hasattr(leveret, name), name
        assert not name.startswith("_"), name
    assert len(set(leveret.__all__)) == len(leveret.__all__)


def test_every_error_the_readme_lists_is_exported() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Errors", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(\w+)(?:\([^`]*\))?`", section))
    errors = {n for n in named if n[0].isupper() and not hasattr(builtins, n)}
    assert errors, "the README lists the errors"
    assert errors <= set(leveret.__all__), errors - set(leveret.__all__)


def test_every_exported_error_derives_from_one_base() -> None:
    for name in leveret.__all__:
        value = getattr(leveret, name)
        if isinstance(value, type) and issubclass(value, Exception):
            steering = value in (leveret.Retry, leveret.Permanent)
            assert steering or issubclass(value, leveret.LeveretError), name
