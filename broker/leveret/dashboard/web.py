"""The dashboard's routes: HTML pages (Jinja2 + htmx) and the same routes as JSON.

A request that asks for ``application/json`` (or adds ``?format=json``) gets JSON;
htmx requests get the fragment they swap in; anything else a whole page. Every
change goes through ``security.check_change`` and ``jobs.Jobs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from leveret.amqp.connection import mask_url
from leveret.app import App
from leveret.dashboard import render, security
from leveret.dashboard.groups import Cause, CauseFilter, GroupIndex
from leveret.dashboard.jobs import Jobs
from leveret.dashboard.queues import QueueWatcher
from leveret.dashboard.schedules import read_board
from leveret.dashboard.settings import DashboardSettings
from leveret.deadletter import DeadLetters
from leveret.errors import LeveretError
from leveret.scheduler import Schedules

HERE = Path(__file__).parent
log = logging.getLogger("leveret.dashboard")


class Dashboard:
    """What the routes share: the app, the dead-letter operations, groups and jobs."""

    def __init__(
        self, app: App, settings: DashboardSettings, schedules: Schedules | None = None
    ) -> None:
        self.app = app
        self.schedules = schedules if schedules is not None and len(schedules) else None
        self.settings = settings
        self.dead = DeadLetters(app)
        self.index = GroupIndex(
            self.dead, scan_limit=settings.scan_limit, every=settings.rescan_seconds
        )
        self.jobs = Jobs(self.dead, self.index)
        self.queues = QueueWatcher(app, settings.management_url, settings.management_retry_seconds)
        self.templates = Jinja2Templates(directory=HERE / "templates")
        render.install(self.templates.env)
        self._index_task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, asgi: Starlette) -> AsyncIterator[None]:
        self._index_task = asyncio.create_task(self.index.run())
        log.info(
            "dashboard ready: %d queues of namespace %s",
            len(self.app.queues),
            self.app.settings.namespace,
        )
        try:
            yield
        finally:
            self.index.stop()
            _, unfinished = await asyncio.wait({self._index_task}, timeout=10)
            for left in unfinished:
                left.cancel()
            await self.jobs.close()
            await self.dead.close()
            await self.app.close()

    # -- rendering ------------------------------------------------------------------

    def page(
        self, request: Request, template: str, data: dict[str, Any], status: int = 200
    ) -> Response:
        """JSON of ``data``, or ``template`` as a fragment (htmx) or a whole page."""
        if wants_json(request):
            return JSONResponse(render.jsonable(data), status_code=status)
        token = security.csrf_token(request)
        context = {
            **data,
            "csrf": token,
            "fragment": "hx-request" in request.headers,
            "broker": mask_url(self.app.settings.url),
            "namespace": self.app.settings.namespace,
            "can_change": self.settings.can_change,
            "read_only": self.settings.read_only,
            "running": self.jobs.running,
            "has_schedules": self.schedules is not None,
        }
        response = self.templates.TemplateResponse(request, template, context, status_code=status)
        if security.CSRF_COOKIE not in request.cookies:
            response.set_cookie(
                security.CSRF_COOKIE, token, httponly=False, samesite="strict", path="/"
            )
        return response

    def refuse(self, request: Request, refusal: security.Refusal) -> Response:
        headers = {}
        # A challenge answering an htmx request would pop up a login box out of
        # nowhere (or hang a headless browser): the refusal links to /login instead.
        if refusal.challenge and "hx-request" not in request.headers:
            headers["WWW-Authenticate"] = 'Basic realm="leveret dashboard", charset="UTF-8"'
        if wants_json(request):
            return JSONResponse({"error": refusal.message}, refusal.status, headers=headers)
        login = ' <a href="/login">Log in</a>.' if refusal.status == 401 else ""
        message = render.escape(refusal.message)
        body = f'<p class="refused" role="alert">Refused: {message}.{login}</p>'
        return Response(body, refusal.status, headers=headers, media_type="text/html")

    def error(self, request: Request, status: int, message: str) -> Response:
        return self.refuse(request, security.Refusal(status, message))

    # -- pages ----------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/queues", 303)

    async def health(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def login(self, request: Request) -> Response:
        """Where a browser asks for basic-auth credentials, then goes back."""
        who = security.caller(request, self.settings)
        if who is None:
            refusal = security.Refusal(401, "log in to make changes", challenge=True)
            return self.refuse(request, refusal)
        return RedirectResponse(request.query_params.get("next", "/dead-letters"), 303)

    async def queues_page(self, request: Request) -> Response:
        report = await self.queues.read()
        return self.page(request, "queues.html", {"report": report})

    async def schedules_page(self, request: Request) -> Response:
        board = None if self.schedules is None else await read_board(self.schedules)
        return self.page(request, "schedules.html", {"board": board})

    async def groups_page(self, request: Request) -> Response:
        data = {"snapshot": self.index.snapshot, "scanning": self.index.scanning}
        return self.page(request, "groups.html", data)

    def _group(self, request: Request) -> Cause | None:
        return self.index.snapshot.find(request.path_params["key"])

    def _where(self, group: Cause, ids: list[str] | None = None) -> CauseFilter:
        return CauseFilter(
            queues=tuple(sorted(group.queues)), keys=(group.key,), ids=tuple(ids or ())
        )

    async def group_page(self, request: Request) -> Response:
        group = self._group(request)
        if group is None:
            return self._gone(request)
        return self.page(request, "group.html", {"group": group, "jobs": self._jobs_of(group)})

    def _gone(self, request: Request) -> Response:
        key = request.path_params["key"]
        message = (
            f"no group {key} in the latest scan: its dead letters were replayed or purged, "
            "or the scan has not reached them yet"
        )
        if wants_json(request):
            return JSONResponse({"error": message}, 404)
        return self.page(request, "gone.html", {"message": message}, status=404)

    def _jobs_of(self, group: Cause) -> list[Any]:
        return [j for j in self.jobs.jobs.values() if group.key in getattr(j.where, "keys", ())]

    async def group_letters(self, request: Request) -> Response:
        group = self._group(request)
        if group is None:
            return self._gone(request)
        try:
            page = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            return self.error(request, 400, "page must be a whole number, 1 or more")
        size = self.settings.page_size
        async with self.jobs.exclusive():
            found = await self.dead.letters(self._where(group), limit=page * size + 1)
        letters = found[(page - 1) * size : page * size]
        data = {
            "group": group,
            "letters": letters,
            "page": page,
            "more": len(found) > page * size,
        }
        return self.page(request, "letters.html", data)

    async def letter_page(self, request: Request) -> Response:
        letter_id = request.path_params["letter_id"]
        queue = request.query_params.get("queue")
        where: dict[str, Any] = {"id": letter_id}
        if queue:
            where["queue"] = queue
        async with self.jobs.exclusive():
            found = await self.dead.letters(where, limit=2)
        if not found:
            return self.error(request, 404, f"no dead letter with id {letter_id} (any more)")
        return self.page(request, "letter.html", {"letter": found[0], "more": len(found) > 1})

    async def preview(self, request: Request) -> Response:
        group = self._group(request)
        if group is None:
            return self._gone(request)
        options = await _options(request)
        if isinstance(options, str):
            return self.error(request, 400, options)
        async with self.jobs.exclusive():
            report = await self.dead.replay(
                self._where(group, options.pop("ids")), dry_run=True, to=options.get("to")
            )
        data = {"group": group, "report": report, "options": options}
        return self.page(request, "preview.html", data)

    async def change(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ("replay", "purge"):
            return self.error(request, 404, f"no action {action!r}: replay or purge")
        options = await _options(request)
        allowed = self.check(request, options)
        if isinstance(allowed, Response):
            return allowed
        assert isinstance(options, dict)
        group = self._group(request)
        if group is None:
            return self._gone(request)
        ids = options.pop("ids")
        expected = len(ids) if ids else group.count
        if action == "purge":
            options = {}
        job = self.jobs.start(
            action, allowed.who, self._where(group, ids), expected=expected, **options
        )
        return self.page(request, "job.html", {"job": job}, status=202)

    def check(self, request: Request, options: dict[str, Any] | str) -> security.Caller | Response:
        csrf = options.get("csrf") if isinstance(options, dict) else None
        allowed = security.check_change(request, self.settings, csrf)
        if isinstance(allowed, security.Refusal):
            return self.refuse(request, allowed)
        if isinstance(options, str):
            return self.error(request, 400, options)
        options.pop("csrf", None)
        return allowed

    async def job_page(self, request: Request) -> Response:
        try:
            job = self.jobs.jobs.get(int(request.path_params["job_id"]))
        except ValueError:
            job = None
        if job is None:
            return self.error(request, 404, "no such job (the dashboard keeps the last 50)")
        return self.page(request, "job.html", {"job": job})

    async def export(self, request: Request) -> Response:
        group = self._group(request)
        if group is None:
            return self._gone(request)
        fd, name = tempfile.mkstemp(prefix="leveret-export-", suffix=".jsonl")
        os.close(fd)
        async with self.jobs.exclusive():
            await self.dead.export_to(name, self._where(group))
        return FileResponse(
            name,
            media_type="application/x-ndjson",
            filename=f"dead-letters-{group.key}.jsonl",
            background=BackgroundTask(os.unlink, name),
        )

    # -- the ASGI app -----------------------------------------------------------------

    def asgi(self) -> Starlette:
        routes = [
            Route("/", self.home),
            Route("/healthz", self.health),
            Route("/login", self.login),
            Route("/queues", self.queues_page),
            Route("/schedules", self.schedules_page),
            Route("/dead-letters", self.groups_page),
            Route("/dead-letters/groups/{key}", self.group_page),
            Route("/dead-letters/groups/{key}/letters", self.group_letters),
            Route("/dead-letters/groups/{key}/preview", self.preview, methods=["GET", "POST"]),
            Route("/dead-letters/groups/{key}/export", self.export),
            Route(
                "/dead-letters/groups/{key}/{action:str}",
                self.change,
                methods=["POST"],
            ),
            Route("/dead-letters/letters/{letter_id}", self.letter_page),
            Route("/jobs/{job_id}", self.job_page),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        app = Starlette(routes=routes, lifespan=self.lifespan)

        async def leveret_error(request: Request, exc: Exception) -> Response:
            return self.error(request, 400, str(exc))

        app.add_exception_handler(LeveretError, leveret_error)
        return app


def wants_json(request: Request) -> bool:
    if request.query_params.get("format") == "json":
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


async def _options(request: Request) -> dict[str, Any] | str:
    """Options of a replay, purge or preview from a form, a JSON body or the query:
    ``rate`` (``50`` or ``50/s``), ``to``, ``ids`` and ``csrf``; or what is wrong."""
    raw: dict[str, Any] = dict(request.query_params)
    ids: list[str] = list(request.query_params.getlist("id"))
    if request.method == "POST":
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                body = await request.json()
            except ValueError:
                return "the body is not JSON"
            if not isinstance(body, dict):
                return "the body must be a JSON object"
            raw.update(body)
            ids += [str(i) for i in body.get("ids") or []]
        else:
            form = await request.form()
            raw.update({k: v for k, v in form.items() if isinstance(v, str)})
            ids += [v for v in form.getlist("id") if isinstance(v, str)]
    unknown = sorted(set(raw) - {"rate", "to", "ids", "id", "csrf", "format"})
    if unknown:
        return f"unknown option {', '.join(unknown)}; known: rate, to, id, csrf"
    options: dict[str, Any] = {"ids": [i for i in ids if i], "csrf": raw.get("csrf")}
    rate = str(raw.get("rate") or "").strip().removesuffix("/s").strip()
    if rate:
        try:
            options["rate"] = float(rate)
        except ValueError:
            return f"rate {raw['rate']!r}: give messages a second, e.g. 50 or 50/s"
        if not 0 < options["rate"] <= 100_000:
            return f"rate {raw['rate']!r}: give a number above 0, at most 100000"
    to = str(raw.get("to") or "").strip()
    if to:
        options["to"] = to
    return options


def create_app(
    app: App, settings: DashboardSettings | None = None, schedules: Schedules | None = None
) -> Starlette:
    """The dashboard of ``app`` as an ASGI application (serve it with uvicorn); with
    ``schedules`` (of the same app) it shows a Schedules page too."""
    return Dashboard(app, settings or DashboardSettings(), schedules).asgi()
