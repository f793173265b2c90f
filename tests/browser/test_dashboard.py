"""The dashboard in headless Chromium (Debian's, driven by Playwright): an operator finds
a group of 2,000 dead letters, previews, replays at a rate, watches it to the end and
sees the group gone and the tasks run; a browser without credentials is refused.

``LEVERET_SCREENSHOTS=1`` writes the screenshots to docs/images/ (for the docs);
otherwise they go to the test's temporary directory.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from leveret import App
from tests.support import ROOT
from tests.support.amqp import fill, queue_size
from tests.support.dashboard import CHROMIUM_FLAGS, PASSWORD, USER, chromium, groups, serving
from tests.support.deadletters import dead_letter
from tests.support.ops import OPS_APP, ledger, start_ops_worker
from tests.support.waiting import PATIENCE, wait_for
from tests.support.workers import Spawn

COUNT = 2000
OTHERS = 20
RATE = 500  # a second: the replay takes about 4 s, long enough to watch it move

# A preview scans the group's letters; on a loaded machine that takes longer than
# playwright's 5 s default for assertions.
expect.set_options(timeout=PATIENCE * 1000)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    path = chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        yield launched
        await launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    if os.environ.get("LEVERET_SCREENSHOTS"):
        return ROOT / "docs" / "images"
    return tmp_path


async def snap(page: Page, shots: Path, name: str) -> None:
    await page.screenshot(path=str(shots / f"dashboard-{name}.png"), full_page=False)


async def test_operator_replays_a_group_at_a_rate_and_watches_it_finish(
    make_app: Callable[..., App],
    amqp_url: str,
    namespace: str,
    spawn_worker: Spawn,
    browser: Browser,
    shots: Path,
    tmp_path: Path,
) -> None:
    app = make_app()
    app.queue("ops")
    await app.declare()
    letters = [
        (
            b'{"seconds": 0}',
            dead_letter(
                task="ops.slow", queue="ops", error=ConnectionError(f"cannot reach 10.1.0.{i % 50}")
            ),
        )
        for i in range(COUNT)
    ]
    others = [
        (b"{}", dead_letter(task="ops.slow", queue="ops", error=KeyError("width")))
        for _ in range(OTHERS)
    ]
    await fill(app.settings.url, app.sender.names.dead_queue("ops"), letters + others)
    wanted = {str(p.message_id) for _, p in letters}
    runs = tmp_path / "ledger"
    await start_ops_worker(spawn_worker, runs)
    env = {"LEVERET_DASHBOARD_USER": USER, "LEVERET_DASHBOARD_PASSWORD": PASSWORD}

    async with serving(amqp_url, namespace, OPS_APP, env=env) as served:
        context = await browser.new_context(
            http_credentials={"username": USER, "password": PASSWORD},
            viewport={"width": 1280, "height": 800},
        )
        page = await context.new_page()
        page.set_default_timeout(PATIENCE * 1000)
        # Log in once (basic auth): the browser then sends the credentials itself.
        await page.goto(served.url + "/login?next=/queues")
        await expect(page.locator("#source")).to_contain_text("passive declares")
        await snap(page, shots, "queues")

        await page.goto(served.url + "/dead-letters")
        group = page.locator(f"tr.group[data-count='{COUNT}']")
        await expect(group).to_contain_text("cannot reach <ip>")
        key = await group.get_attribute("data-key")
        await snap(page, shots, "dead-letters")

        await group.locator("a").click()
        await expect(page.locator("h1")).to_contain_text(f"{COUNT:,}")
        await expect(page.locator("tr.letter").first).to_be_visible()
        await page.click("#preview-button")
        await expect(page.locator("#preview-result")).to_have_attribute("data-matched", str(COUNT))
        await snap(page, shots, "preview")

        await page.fill("#replay-form input[name=rate]", f"{RATE}/s")
        await page.click("#replay-button")
        job = page.locator("#job .job")
        await expect(job).to_have_attribute("data-state", "running")
        await expect(job).to_have_attribute("data-state", "done", timeout=PATIENCE * 2000)
        await expect(job.locator(".moved")).to_have_text(f"{COUNT:,}")
        await snap(page, shots, "replayed")

        await page.goto(served.url + "/dead-letters")
        await expect(page.locator(f"tr.group[data-key='{key}']")).to_have_count(0)
        await expect(page.locator(f"tr.group[data-count='{OTHERS}']")).to_have_count(1)
        await context.close()

    await wait_for(
        lambda: {i for event, i, _ in ledger(runs) if event == "done"} >= wanted,
        what=lambda: f"{len(ledger(runs))} ledger lines of {COUNT} tasks",
    )
    assert await queue_size(amqp_url, app.sender.names.dead_queue("ops")) == OTHERS


async def test_a_browser_without_credentials_is_refused(
    make_app: Callable[..., App], amqp_url: str, namespace: str, browser: Browser
) -> None:
    app = make_app()
    app.queue("ops")
    await app.declare()
    dlq = app.sender.names.dead_queue("ops")
    await fill(app.settings.url, dlq, [(b"{}", dead_letter(task="ops.slow", queue="ops"))] * 5)
    env = {"LEVERET_DASHBOARD_USER": USER, "LEVERET_DASHBOARD_PASSWORD": PASSWORD}
    async with serving(amqp_url, namespace, OPS_APP, env=env) as served:
        async with served.client() as client:
            key = (await groups(client))[0]["key"]
        page = await browser.new_page()
        page.set_default_timeout(PATIENCE * 1000)
        await page.goto(f"{served.url}/dead-letters/groups/{key}")
        page.on("dialog", lambda dialog: dialog.accept())  # "Delete these ...?"
        await page.click("#purge-button")
        await expect(page.locator("#job .refused")).to_contain_text("credentials required")
        await page.close()
    assert await queue_size(amqp_url, dlq) == 5
