"""Who may change things: a bearer token or basic-auth credentials, never a default;
CSRF protection for browsers; read-only mode.

Reading needs no credentials (run the dashboard where only operators can reach it).
A change - replay, purge - needs ``Authorization: Bearer <token>`` or basic auth. A
browser sends basic-auth credentials by itself with any request to the site, also one
a hostile page triggers, so such a request must also carry the CSRF token: the value
of the ``leveret_csrf`` cookie, in an ``X-CSRF-Token`` header or a ``csrf`` form
field (double submit; the cookie is ``SameSite=Strict``). A bearer token is never sent
by a browser on its own and needs no CSRF token.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from dataclasses import dataclass

from starlette.requests import Request

from leveret.dashboard.settings import DashboardSettings

CSRF_COOKIE = "leveret_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str
    challenge: bool = False  # ask the browser for basic-auth credentials


@dataclass(frozen=True)
class Caller:
    who: str
    by_browser: bool  # basic auth: needs the CSRF token


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def caller(request: Request, settings: DashboardSettings) -> Caller | None:
    """Who sent the request, if its credentials are right."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    token = settings.token
    if scheme.lower() == "bearer" and token and _same(value.strip(), token.get_secret_value()):
        return Caller("token", by_browser=False)
    if scheme.lower() == "basic" and settings.user is not None and settings.password is not None:
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if _same(user, settings.user) and _same(password, settings.password.get_secret_value()):
            return Caller(user, by_browser=True)
    return None


def csrf_token(request: Request) -> str:
    """The request's CSRF cookie, or a new token to set as one."""
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)


def check_change(
    request: Request, settings: DashboardSettings, form_csrf: str | None
) -> Caller | Refusal:
    """The caller allowed to make a change, or why not."""
    if settings.read_only:
        return Refusal(403, "the dashboard is read-only (--read-only): nothing can be changed")
    if settings.token is None and settings.user is None:
        return Refusal(
            403,
            "changes are off: no credentials are configured; set LEVERET_DASHBOARD_TOKEN or "
            "LEVERET_DASHBOARD_USER and LEVERET_DASHBOARD_PASSWORD (--token, --user, "
            "--password)",
        )
    who = caller(request, settings)
    if who is None:
        return Refusal(
            401,
            "credentials required: send Authorization: Bearer <token>, or log in",
            challenge=settings.user is not None,
        )
    if who.by_browser:
        cookie = request.cookies.get(CSRF_COOKIE, "")
        sent = request.headers.get(CSRF_HEADER) or form_csrf or ""
        if not cookie or not _same(cookie, sent):
            return Refusal(403, "missing or wrong CSRF token: reload the page and try again")
    return who
