"""Reading the RabbitMQ management HTTP API, for what AMQP cannot show.

Bindings, policies and permissions are only visible there. The standard library's
urllib is enough for a handful of GET requests; each runs in a thread so the event
loop is never blocked. Nothing is ever written.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

DEFAULT_PORT = 15672


class Unreachable(Exception):
    """The management API did not answer, or refused us (the message says which)."""


class Forbidden(Unreachable):
    """The API answered, but this login may not read that (not an administrator)."""


def default_url(amqp_url: str) -> str:
    """The management API beside a broker: same host and credentials, port 15672."""
    amqp = urllib.parse.urlsplit(amqp_url.split(",")[0].strip())
    auth = f"{amqp.username or 'guest'}:{amqp.password or 'guest'}@"
    return f"http://{auth}{amqp.hostname or 'localhost'}:{DEFAULT_PORT}/"


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``, for output."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def vhost_of(amqp_url: str) -> str:
    path = urllib.parse.urlsplit(amqp_url.split(",")[0].strip()).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


@dataclass(frozen=True)
class Management:
    """A read-only client of one broker's management API on one vhost."""

    url: str
    vhost: str = "/"
    timeout: float = 5.0

    @classmethod
    def for_amqp(cls, amqp_url: str, url: str | None = None) -> Management:
        """The API at ``url`` (credentials from the AMQP URL if it has none)."""
        parts = urllib.parse.urlsplit(url or default_url(amqp_url))
        if parts.username is None:
            amqp = urllib.parse.urlsplit(amqp_url.split(",")[0].strip())
            auth = f"{amqp.username or 'guest'}:{amqp.password or 'guest'}@"
            parts = parts._replace(netloc=auth + parts.netloc)
        return cls(urllib.parse.urlunsplit(parts), vhost_of(amqp_url))

    def quoted(self, *segments: str) -> str:
        return "/".join(urllib.parse.quote(s, safe="") for s in segments)

    async def get(self, path: str) -> Any:
        """The JSON at ``/api/<path>``; ``Unreachable`` if the API cannot give it."""
        return await asyncio.to_thread(self._get, path)

    def _get(self, path: str) -> Any:
        parts = urllib.parse.urlsplit(self.url)
        base = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        request = urllib.request.Request(base.rstrip("/") + "/api/" + path)
        token = f"{urllib.parse.unquote(parts.username or '')}:"
        token += urllib.parse.unquote(parts.password or "")
        request.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if exc.code == 403:
                raise Forbidden(
                    f"{masked(self.url)} does not let this login read /api/{path} "
                    "(it takes the administrator tag)"
                ) from None
            raise Unreachable(f"{masked(self.url)} answered HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise Unreachable(f"no management API at {masked(self.url)} ({exc.reason})") from None
        except (OSError, ValueError) as exc:
            raise Unreachable(f"no management API at {masked(self.url)} ({exc})") from None
