"""``leveret dlq``: what an operator types, run as a subprocess against a real RabbitMQ."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from leveret import App
from leveret.deadletter.codec import ExactProperties
from tests.support.amqp import fill, ids_in, queue_size
from tests.support.deadletters import dead_letter
from tests.support.processes import cli

#: The app ``--app tests.integration.test_dlq_cli:cli_app`` loads (namespace from env).
cli_app = App(app_id="dlq-cli-test")
cli_app.queue("jobs")


class SmtpDown(Exception):
    pass


@pytest.fixture
async def filled(make_app: Callable[..., App]) -> tuple[App, list[str]]:
    """A dead-letter queue with 2 + 2 worker dead letters and one foreign message."""
    app = make_app()
    app.queue("jobs")
    await app.declare()
    letters = [
        (b'{"to": "a@example.com"}', dead_letter(task="jobs.mail", error=SmtpDown("421 busy"))),
        (b'{"to": "b@example.com"}', dead_letter(task="jobs.mail", error=SmtpDown("421 busy"))),
        (b'{"image": 1}', dead_letter(task="jobs.thumb", error=KeyError("width"))),
        (b'{"image": 2}', dead_letter(task="jobs.thumb", error=KeyError("width"))),
        (b"\x00garbage", ExactProperties(message_id="foreign-1")),
    ]
    await fill(app.settings.url, app.sender.names.dead_queue("jobs"), letters)
    ids = [str(props.message_id) for _, props in letters]
    return app, ids


def run(app: App, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    done = cli(app.settings.url, app.settings.namespace, "dlq", *args, stdin=stdin)
    return done.returncode, done.stdout, done.stderr


async def test_list_summary_and_show(filled: tuple[App, list[str]]) -> None:
    app, ids = filled
    code, out, err = run(app, "list", "--queue", "jobs")
    assert code == 0, err
    assert "jobs.mail" in out
    assert "SmtpDown: 421 busy" in out
    assert ids[2][:12] in out
    assert "5 dead letters matching all" in err

    code, out, err = run(app, "list", "--app", "tests.integration.test_dlq_cli:cli_app", "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(ids)
    mail = [r for r in rows if r["task"] == "jobs.mail"]
    assert mail[0]["error_type"].endswith("SmtpDown")
    assert mail[0]["attempts"] == 3
    assert mail[0]["reason"] == "exhausted"

    code, out, _ = run(app, "list", "-q", "jobs", "--task", "jobs.t*", "--json")
    assert len(out.splitlines()) == 2
    code, out, err = run(app, "list", "-q", "jobs", "--match", "WIDTH", "--limit", "1")
    assert "1 of 2 dead letters matching error containing 'WIDTH'" in err
    assert out.count("jobs.thumb") == 1

    code, out, err = run(app, "summary", "-q", "jobs")
    assert code == 0, err
    assert "What broke, how often" in out
    assert "SmtpDown" in out
    code, out, _ = run(app, "list", "-q", "jobs", "--summary", "--json")
    groups = {
        (g["task"], g["error_type"].rsplit(".")[-1]): g["count"]
        for g in map(json.loads, out.splitlines())
    }
    assert groups == {
        ("jobs.mail", "SmtpDown"): 2,
        ("jobs.thumb", "KeyError"): 2,
        (None, "(unknown)"): 1,
    }

    code, out, err = run(app, "show", ids[0][:8], "-q", "jobs")
    assert code == 0, err
    assert '"to": "a@example.com"' in out
    assert "Traceback" in out
    assert "SmtpDown: 421 busy" in out
    assert "leveret-worker" in out
    code, out, _ = run(app, "show", "foreign-1", "-q", "jobs", "--json")
    shown = json.loads(out)
    assert shown["payload"] is None
    assert shown["body"] == "AGdhcmJhZ2U="
    code, _, err = run(app, "show", "no-such-id", "-q", "jobs")
    assert code == 1
    assert "no dead letter" in err


async def test_replay_and_purge(filled: tuple[App, list[str]]) -> None:
    app, ids = filled
    names = app.sender.names
    code, _, err = run(app, "replay", "-q", "jobs", "--task", "jobs.mail", "--dry-run")
    assert code == 0, err
    assert "would replay 2 of 5 dead letters" in err
    code, _, err = run(app, "replay", "-q", "jobs", "--task", "jobs.mail", "--rate", "100/s")
    assert code == 0, err
    assert "replayed 2 dead letters; 3 others left" in err
    assert sorted(await ids_in(app.settings.url, names.work_queue("jobs"))) == sorted(ids[:2])

    code, _, err = run(app, "purge", "-q", "jobs", "--error-type", "KeyError")
    assert code == 2
    assert "Delete 2 dead letters for good" in err
    assert "pass --yes" in err
    assert await queue_size(app.settings.url, names.dead_queue("jobs")) == 3
    code, _, err = run(app, "purge", "-q", "jobs", "--error-type", "KeyError", "--yes")
    assert code == 0, err
    assert "purged 2 dead letters; 1 others left" in err
    assert await ids_in(app.settings.url, names.dead_queue("jobs")) == ["foreign-1"]


async def test_export_and_import(filled: tuple[App, list[str]], tmp_path: Path) -> None:
    app, ids = filled
    backup = tmp_path / "dlq.jsonl"
    code, _, err = run(app, "export", str(backup), "-q", "jobs")
    assert code == 0, err
    assert f"exported 5 dead letters to {backup}" in err
    assert run(app, "purge", "-q", "jobs", "--yes")[0] == 0
    code, _, err = run(app, "import", str(backup), "--dry-run")
    assert "5 dead letters can be imported (jobs: 5)" in err
    code, _, err = run(app, "import", str(backup))
    assert code == 0, err
    assert "imported 5 dead letters (jobs: 5)" in err

    code, out, _ = run(app, "export", "-", "-q", "jobs", "--task", "jobs.thumb")
    assert len(out.splitlines()) == 2
    code, _, err = run(app, "import", "-", "-q", "jobs", stdin=out)
    assert code == 0, err
    assert sorted(await ids_in(app.settings.url, app.sender.names.dead_queue("jobs"))) == sorted(
        ids + ids[2:4]
    )

    broken = tmp_path / "broken.jsonl"
    broken.write_text(backup.read_text().splitlines()[0] + "\n{not json\n")
    code, _, err = run(app, "import", str(broken))
    assert code == 2
    assert "line 2: not JSON" in err
    assert await queue_size(app.settings.url, app.sender.names.dead_queue("jobs")) == 7


async def test_bad_input_gives_clear_errors(filled: tuple[App, list[str]]) -> None:
    app, _ = filled
    code, _, err = run(app, "list", "-q", "nope")
    assert code == 2
    assert "dead-letter queue" in err
    assert "does not exist" in err
    code, _, err = run(app, "list")
    assert code == 2
    assert "which dead-letter queues?" in err
    code, _, err = run(app, "list", "-q", "jobs", "--colour", "red")
    assert code == 2
    assert "unrecognized arguments: --colour" in err
    code, _, err = run(app, "list", "-q", "jobs", "--older-than", "tuesday")
    assert code == 2
    assert "cannot read the age 'tuesday'" in err
    code, _, err = run(app, "replay", "-q", "jobs", "--to", "nowhere")
    assert code == 2
    assert "work queue" in err
    code, _, err = run(app, "replay", "-q", "jobs", "--rate", "fast")
    assert code == 2
    assert "not a rate" in err


async def test_show_falls_back_to_the_raw_body_when_json_is_nested_too_deeply(
    make_app: Callable[..., App],
) -> None:
    app = make_app()
    app.queue("jobs")
    await app.declare()
    body = b"[" * 100_000 + b"]" * 100_000
    props = dead_letter(task="jobs.deep", task_id="deep-1", reason="invalid-payload")
    await fill(app.settings.url, app.sender.names.dead_queue("jobs"), [(body, props)])

    code, out, err = run(app, "show", "deep-1", "-q", "jobs")
    assert code == 0, err[-2000:]
    assert "body not shown as JSON: nested too deeply" in out
    assert "raw, first 2,000 of 200,000 bytes" in out
    assert "Traceback" in out
    assert len(out) < 20_000

    code, out, err = run(app, "show", "deep-1", "-q", "jobs", "--json")
    assert code == 0, err[-2000:]
    shown = json.loads(out)
    assert shown["payload"] is None
    assert shown["payload_error"].startswith("nested too deeply")
    assert len(out) < 2 * len(body)  # the body whole, base64: no pretty-printing of it

    for listing in (["list"], ["summary"], ["export", "-"]):
        code, _, err = run(app, *listing, "-q", "jobs")
        assert code == 0, err[-2000:]


async def test_a_misspelt_reason_is_refused_and_a_filter_matching_nothing_says_so(
    filled: tuple[App, list[str]],
) -> None:
    app, ids = filled
    names = app.sender.names
    for action in (["replay"], ["purge", "--yes"], ["list"]):
        code, _, err = run(app, *action, "-q", "jobs", "--reason", "bogus")
        assert code == 2, err
        assert err.strip().splitlines() == [
            "error: unknown reason 'bogus'; the reasons are: exhausted, permanent, "
            "invalid-payload, malformed, unknown-task, misrouted, oversize, delivery-limit, "
            "rejected, "
            "expired, maxlen, unknown"
        ]
    assert await queue_size(app.settings.url, names.dead_queue("jobs")) == 5

    for action, nothing in (
        (["replay"], "nothing replayed"),
        (["replay", "--dry-run"], "nothing to replay"),
        (["purge", "--yes"], "nothing purged"),
        (["purge"], "nothing to purge"),
    ):
        code, _, err = run(app, *action, "-q", "jobs", "--reason", "permanent")
        assert code == 0, err
        assert (
            "0 matched: none of the 5 dead letters in jobs matches reason permanent; " + nothing
        ) in err
    code, _, err = run(app, "purge", "-q", "jobs", "--task", "jbos.*", "--yes")
    assert "0 matched: none of the 5 dead letters in jobs matches task jbos.*" in err
    assert sorted(await ids_in(app.settings.url, names.dead_queue("jobs"))) == sorted(ids)

    code, _, err = run(app, "purge", "-q", "jobs", "--reason", "unknown", "--yes")
    assert code == 0, err
    assert "purged 1 dead letter" in err
