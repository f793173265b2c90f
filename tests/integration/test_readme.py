"""The README's commands work as written: each is run, as shown, against a real broker.

A reader pastes them from the repository root into a shell; this test does the same
in a namespace of its own, after putting in the dead-letter queues what the commands
talk about (the letter ``67d515dc``, ``SmtpDown`` errors, thumbnails to purge).
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from leveret import App
from leveret.cli import parser
from tests.support import ROOT
from tests.support.amqp import fill
from tests.support.deadletters import dead_letter
from tests.support.processes import Output
from tests.support.waiting import wait_until

README = ROOT / "README.md"


class SmtpDown(Exception):
    """What the README's dead letters died of."""


def blocks() -> list[list[str]]:
    """The lines of each shell block, comments and prompts taken off."""
    found = re.findall(r"```(?:sh|bash|console)\n(.*?)```", README.read_text(), flags=re.S)
    return [
        [
            line.removeprefix("$ ").split("  #")[0].strip()
            for line in block.splitlines()
            if line.strip() and not line.startswith("#")
        ]
        for block in found
    ]


def is_cli(line: str) -> bool:
    return line.startswith(("leveret ", "python -m leveret "))


def cli_args(line: str) -> list[str]:
    words = shlex.split(line)
    return words[3:] if words[0] == "python" else words[1:]


@pytest.mark.parametrize("command", [line for block in blocks() for line in block if is_cli(line)])
def test_every_cli_command_in_the_readme_parses(command: str) -> None:
    assert callable(parser().parse_args(cli_args(command)).run)


def test_the_readme_shows_the_two_commands_first() -> None:
    first = blocks()[0]
    assert first[0].startswith("make demo")
    assert any(line.startswith("make test") for line in first)


def test_every_line_of_a_shell_block_is_something_this_test_runs() -> None:
    for line in (line for block in blocks() for line in block):
        assert is_cli(line) or line.startswith(("make ", "export ", ". ")), line
        assert not re.search(r"[|;<>&]|\$\(", line), f"not run as a plain command: {line}"


def reader_env(url: str, namespace: str) -> dict[str, str]:
    """A shell with the project's environment active and nothing of ours set, but the
    broker and a namespace of the test's own (the README leaves both at their defaults)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("LEVERET_") and k != "RABBITMQ_URL"
    }
    bin_dir = Path(sys.executable).parent
    assert shutil.which("leveret", path=str(bin_dir)), "the leveret script is not installed"
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
        LEVERET_URL=url,
        LEVERET_NAMESPACE=namespace,
        COLUMNS="200",
    )
    return env


def run_worker(words: list[str], env: dict[str, str], cwd: Path, ready: str = "consuming") -> None:
    """Start it, see it consume (or serve), SIGTERM it: it must drain and exit 0."""
    proc = subprocess.Popen(
        words, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output = Output(proc)
    try:
        wait_until(
            lambda: ready in output.text or proc.poll() is not None,
            what=lambda: f"never printed {ready!r}:\n{output.text}",
        )
        assert proc.poll() is None, f"exited {proc.returncode}:\n{output.text}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, output.text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        output.join()
        assert proc.stdout is not None
        proc.stdout.close()


async def seed(url: str, app: App, env: dict[str, str]) -> list[str]:
    """The demo app's topology, and the dead letters the README's commands are about."""
    declare = ["leveret", "declare", "tasks.handlers:app"]
    declared = await asyncio.to_thread(subprocess.run, declare, env=env, cwd=ROOT, check=False)
    assert declared.returncode == 0
    hours_ago = int((datetime.now(tz=UTC) - timedelta(hours=3)).timestamp() * 1000)
    emails = [
        ("67d515dcb0624f0c9c1a8e3b5d2f7a10", SmtpDown("421 try later"), "exhausted"),
        ("8fe0afc948b04b4f8a6e2c1d0b9e7f31", SmtpDown("421 try later"), "exhausted"),
        ("a15aba46acf54c2e9d7b3f8e1c6a0d52", ValueError("no such address"), "permanent"),
    ]
    await fill(
        url,
        app.sender.names.dead_queue("emails"),
        [
            (
                b'{"order_id": 1, "email": "a@example.com", "placed_at": "2024-05-01T12:00:00Z", '
                b'"items": []}',
                dead_letter(
                    task="emails.send_receipt",
                    task_id=task_id,
                    queue="emails",
                    error=error,
                    reason=reason,
                    attempt=10,
                    failed_at_ms=hours_ago,
                ),
            )
            for task_id, error, reason in emails
        ],
    )
    thumbnails = [
        (
            b'{"image_id": "ab12", "height": 64}',
            dead_letter(
                task="images.thumbnail", queue="images", error=KeyError("width"), reason="permanent"
            ),
        )
        for _ in range(3)
    ]
    await fill(url, app.sender.names.dead_queue("images"), thumbnails)
    return [task_id for task_id, _, _ in emails]


def run_readme(env: dict[str, str], cwd: Path) -> dict[str, str]:
    """Run each line of each block in order, as a shell would; what each command said."""
    said: dict[str, str] = {}
    for block in blocks():
        block_env = dict(env)
        for line in block:
            if line.startswith("make "):
                target = shlex.split(line)[1]
                dry = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True)
                assert dry.returncode == 0, f"{line}: no such make target"
                continue
            if line.startswith(". "):
                assert (ROOT / shlex.split(line)[1]).is_file(), f"{line}: nothing to source"
                continue
            if line.startswith("export "):
                block_env.update(word.split("=", 1) for word in shlex.split(line)[1:])
                continue
            words = shlex.split(line)
            if cli_args(line)[0] == "worker":
                run_worker(words, block_env, cwd)
                continue
            if cli_args(line)[0] == "dashboard":  # on a free port, not the shown default
                run_worker(
                    words, {**block_env, "LEVERET_DASHBOARD_PORT": "0"}, cwd, "dashboard ready"
                )
                continue
            done = subprocess.run(
                words, env=block_env, cwd=cwd, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, f"{line}\nexit {done.returncode}\n{done.stderr}"
            said[" ".join(cli_args(line)[:2])] = done.stdout + done.stderr
    return said


async def test_every_command_in_the_readme_runs_as_shown(
    amqp_url: str, namespace: str, make_app: Callable[..., App], tmp_path: Path
) -> None:
    app = make_app()  # only for the queue names, and to delete the namespace afterwards
    app.queue("emails")
    app.queue("images")
    env = reader_env(amqp_url, namespace)
    await seed(amqp_url, app, env)

    said = await asyncio.to_thread(run_readme, env, tmp_path)

    assert "SmtpDown" in said["dlq summary"]
    assert "67d515dcb062" in said["dlq list"]
    assert "67d515dcb0624f0c9c1a8e3b5d2f7a10" in said["dlq show"]
    assert "421 try later" in said["dlq show"]
    assert "replayed 2 dead letters" in said["dlq replay"]
    assert "purged 3 dead letters" in said["dlq purge"]
    assert "exported 1 dead letter to emails-dlq.jsonl" in said["dlq export"]
    assert (tmp_path / "emails-dlq.jsonl").read_text().count("\n") == 1
    assert "imported 1 dead letter (emails: 1)" in said["dlq import"]
