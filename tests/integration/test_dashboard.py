"""The dashboard over HTTP against a real RabbitMQ: grouping, the JSON API, and who may
change what (token, basic auth with CSRF, read-only, nothing configured)."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from leveret import App
from tests.support.amqp import fill, ids_in, queue_size
from tests.support.dashboard import PASSWORD, TOKEN, USER, groups, serving
from tests.support.deadletters import dead_letter
from tests.support.ops import OPS_APP
from tests.support.waiting import wait_for

BEARER = {"Authorization": f"Bearer {TOKEN}"}
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
AUTH_ENV = {
    "LEVERET_DASHBOARD_TOKEN": TOKEN,
    "LEVERET_DASHBOARD_USER": USER,
    "LEVERET_DASHBOARD_PASSWORD": PASSWORD,
}


async def filled(make_app: Callable[..., App]) -> App:
    """30 timeouts to hosts that differ only by address, 4 KeyErrors, on queue ops."""
    app = make_app()
    app.queue("ops")
    await app.declare()
    letters = [
        (
            b'{"seconds": 0}',
            dead_letter(task="ops.slow", queue="ops", error=TimeoutError(f"to 10.0.0.{i}:5432")),
        )
        for i in range(30)
    ]
    letters += [(b"{}", dead_letter(task="ops.slow", queue="ops", error=KeyError("w")))] * 4
    await fill(app.settings.url, app.sender.names.dead_queue("ops"), letters)
    return app


async def test_groups_by_cause_and_shows_one_letter_whole(
    make_app: Callable[..., App], amqp_url: str, namespace: str
) -> None:
    await filled(make_app)
    async with serving(amqp_url, namespace, OPS_APP) as served, served.client() as client:
        found = await groups(client)
        assert [(g["count"], g["shape"]) for g in found] == [
            (30, "to <ip>"),
            (4, "<str>"),
        ]
        key = found[0]["key"]
        letters = (await client.get(f"/dead-letters/groups/{key}/letters?format=json")).json()
        assert len(letters["letters"]) == 30
        assert not letters["more"]
        first = letters["letters"][0]
        one = (await client.get(f"/dead-letters/letters/{first['id']}?format=json")).json()
        assert one["letter"]["payload"] == {"seconds": 0}
        assert "TimeoutError" in one["letter"]["traceback"]
        assert one["letter"]["export"]["queue"] == "ops"

        preview = (await client.get(f"/dead-letters/groups/{key}/preview?format=json")).json()
        assert "report" in preview, preview
        assert preview["report"]["matched"] == 30
        assert preview["report"]["dry_run"]

        page = await client.get("/queues")
        assert page.status_code == 200
        assert "passive declares" in page.text or "management API" in page.text
        assert "guest:guest" not in page.text  # the broker's password is masked
        export = await client.get(f"/dead-letters/groups/{key}/export")
        assert export.text.count("\n") == 30
    # Reading moved nothing (while the dashboard ran, its scans held them for a moment).
    assert await queue_size(amqp_url, f"{namespace}.dlq.ops") == 34


async def test_changes_need_credentials_and_csrf(
    make_app: Callable[..., App], amqp_url: str, namespace: str
) -> None:
    app = await filled(make_app)
    dlq = app.sender.names.dead_queue("ops")
    async with (
        serving(amqp_url, namespace, OPS_APP, env=AUTH_ENV) as served,
        served.client() as client,
    ):
        key = (await groups(client))[0]["key"]
        replay = f"/dead-letters/groups/{key}/replay?format=json"
        refused = await client.post(replay)
        assert refused.status_code == 401
        assert "credentials required" in refused.json()["error"]
        assert (
            await client.post(replay, headers={"Authorization": "Bearer nope"})
        ).status_code == 401
        # Basic auth is what a browser sends by itself: it needs the CSRF token too.
        no_csrf = await client.post(replay, headers=BASIC)
        assert no_csrf.status_code == 403
        assert "CSRF" in no_csrf.json()["error"]
        assert (await client.post(replay, headers=BEARER, data={"rate": "fast"})).status_code == 400
        assert not (await client.get("/jobs/1?format=json")).is_success  # nothing started

        page = await client.get(f"/dead-letters/groups/{key}")
        csrf = client.cookies["leveret_csrf"]
        assert csrf in page.text
        started = await client.post(replay, headers=BASIC, data={"csrf": csrf, "rate": "500/s"})
        assert started.status_code == 202, started.text
        job = started.json()["job"]
        assert job["who"] == USER

        async def finished() -> bool:
            r = await client.get(f"/jobs/{job['id']}?format=json")
            return bool(r.json()["job"]["state"] == "done")

        await wait_for(finished, every=0.1)
        assert len(await ids_in(amqp_url, app.sender.names.work_queue("ops"))) == 30
        await wait_for(lambda: "oncall replay #1 done: 30 moved" in served.output.text)
    assert await queue_size(amqp_url, dlq) == 4


@pytest.mark.parametrize(
    ("args", "env", "why"),
    [
        (("--read-only",), AUTH_ENV, "read-only"),
        ((), {}, "no credentials are configured"),
    ],
)
async def test_refuses_every_change_when_read_only_or_unconfigured(
    make_app: Callable[..., App],
    amqp_url: str,
    namespace: str,
    args: tuple[str, ...],
    env: dict[str, str],
    why: str,
) -> None:
    await filled(make_app)
    async with (
        serving(amqp_url, namespace, OPS_APP, *args, env=env) as served,
        served.client() as client,
    ):
        key = (await groups(client))[0]["key"]
        for action in ("replay", "purge"):
            r = await client.post(
                f"/dead-letters/groups/{key}/{action}?format=json", headers=BEARER
            )
            assert r.status_code == 403
            assert why in r.json()["error"]
    assert await queue_size(amqp_url, f"{namespace}.dlq.ops") == 34
