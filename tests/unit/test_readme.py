"""The README's commands and examples are ones that work."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from broker.cli import parser

README = Path(__file__).resolve().parents[2] / "README.md"


def shell_commands() -> list[str]:
    blocks = re.findall(r"```(?:sh|bash|console)\n(.*?)```", README.read_text(), flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith(("leveret ", "python -m broker "))]


@pytest.mark.parametrize("command", shell_commands())
def test_every_cli_command_in_the_readme_parses(command: str) -> None:
    words = shlex.split(command)
    args = words[3:] if words[0] == "python" else words[1:]
    parsed = parser().parse_args(args)
    assert callable(parsed.run)


def test_the_readme_shows_the_two_commands_first() -> None:
    text = README.read_text()
    first_block = re.search(r"```sh\n(.*?)```", text, flags=re.S)
    assert first_block is not None
    assert first_block.group(1).startswith("make demo")
    assert "make test" in first_block.group(1)
