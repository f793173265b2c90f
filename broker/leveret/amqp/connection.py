"""One AMQP connection, (re)opened with exponential backoff and jitter.

aio-pika's robust connection does not bring every consumer back (its issues #231,
#334, #594), so this package reconnects itself: ``Connector.get()`` hands out a
live connection, opening a new one when the last has died, and the worker
re-subscribes its consumers on each new one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import ssl
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    stop_never,
)

from leveret.amqp import compat
from leveret.errors import BrokerUnavailable
from leveret.settings import Settings

log = logging.getLogger(__name__)

#: What a lost or refused connection raises, in aio-pika, aiormq and asyncio.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    *aio_pika.exceptions.CONNECTION_EXCEPTIONS,
    asyncio.TimeoutError,
)


def mask_url(url: str) -> str:
    """The URL with its password replaced, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def is_open(connection: AbstractConnection) -> bool:
    """Whether the connection still works.

    aio-pika's ``is_closed`` turns True only after our own ``close()``: when the broker
    closes the connection (a restart, a forced close) it stays False. The AMQP
    connection underneath knows.
    """
    return not connection.is_closed and compat.underlay_open(connection)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _is_retryable(exc: BaseException) -> bool:
    """Refused credentials or a failed TLS handshake will not fix themselves."""
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
        return False
    return isinstance(exc, CONNECTION_ERRORS) and _tls_failure(exc) is None


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind a failed connect: aiormq wraps it in AMQPConnectionError."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:  # a chain may loop back on itself
        if isinstance(seen, ssl.SSLError):
            return seen
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _tls_advice(url: str, error: ssl.SSLError) -> str:
    """What a failed TLS handshake means, in the terms of the URL that was used."""
    detail = getattr(error, "verify_message", None) or error.reason or str(error)
    if "mismatch" in str(detail):
        fix = (
            "the server's certificate is not issued for the host in the URL: connect by a "
            "name the certificate lists (its subjectAltName), not another name or an IP"
        )
    elif isinstance(error, ssl.SSLCertVerificationError):
        fix = (
            "the server's certificate is not signed by a CA this client trusts: give the CA "
            "file in the URL, e.g. amqps://user:pass@host:5671/?cafile=/etc/ssl/rabbitmq-ca.pem"
        )
    else:
        fix = "that port does not speak TLS: amqps:// needs the broker's TLS port (usually 5671)"
    return f"TLS handshake with {url} failed ({detail}): {fix}."


class Connector:
    """Hands out a live connection; one connect at a time, however many callers."""

    def __init__(self, settings: Settings, *, name: str = "leveret") -> None:
        self.settings = settings
        self.name = name
        self._connection: AbstractConnection | None = None
        self._lock = asyncio.Lock()
        self.reconnects = 0
        self._next = 0  # index into settings.urls of the node to try first

    @property
    def connection(self) -> AbstractConnection | None:
        """The current connection if it is open, else None.

        aio-pika's ``is_closed`` turns true only once ``close()`` is called: a
        connection the broker or the network dropped shows as ``connected`` cleared.
        """
        conn = self._connection
        if conn is None or not is_open(conn) or not conn.connected.is_set():
            return None
        return conn

    async def get(self, *, deadline: float | None = None) -> AbstractConnection:
        """A live connection, connecting first if needed.

        ``deadline`` (seconds) bounds the retries; None uses ``connect_deadline`` and
        ``float('inf')`` retries for ever (a worker reconnecting after an outage).
        """
        conn = self.connection
        if conn is not None:
            return conn
        async with self._lock:
            conn = self.connection
            if conn is not None:
                return conn
            dead, self._connection = self._connection, None
            if dead is not None:
                await _close_dead(dead)
                self._next += 1  # its node may be gone: start with the next one
            self._connection = await self._connect(deadline)
            if dead is not None:
                self.reconnects += 1
            return self._connection

    async def _connect(self, deadline: float | None) -> AbstractConnection:
        compat.prepare()  # the frame reader and heartbeat grace, before aiormq's first connection
        limit = self.settings.connect_deadline if deadline is None else deadline
        urls = self.settings.urls
        masked = ", ".join(mask_url(url) for url in urls)
        trying = [0]

        def wait(state: RetryCallState) -> float:
            """Each node once without a pause, then back off between rounds."""
            if state.attempt_number % len(urls):
                return 0.0
            rounds = state.attempt_number // len(urls)
            return min(0.2 * 2.0 ** (rounds - 1), 5.0) + random.uniform(0, 0.5)

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "connecting to %s failed (attempt %d: %s); retrying in %.1f s",
                mask_url(urls[trying[0]]),
                state.attempt_number,
                exc,
                state.next_action.sleep if state.next_action else 0,
            )

        retrying = AsyncRetrying(
            stop=stop_never if limit == float("inf") else stop_after_delay(limit),
            wait=wait,
            retry=retry_if_exception(_is_retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    trying[0] = self._next % len(urls)
                    try:
                        return await aio_pika.connect(
                            urls[trying[0]],
                            heartbeat=self.settings.heartbeat,
                            timeout=max(5.0, self.settings.heartbeat),
                            client_properties={"connection_name": self.name},
                        )
                    except BaseException:
                        self._next = trying[0] + 1
                        raise
        except aiormq.exceptions.ProbableAuthenticationError:
            raise BrokerUnavailable(
                f"RabbitMQ at {masked} refused the credentials: check the user and "
                "password in LEVERET_URL (or RABBITMQ_URL) and the user's vhost permissions."
            ) from None
        except CONNECTION_ERRORS as exc:
            tls = _tls_failure(exc)
            if tls is not None:
                raise BrokerUnavailable(_tls_advice(mask_url(urls[trying[0]]), tls)) from None
            hint = ""
            if isinstance(exc.__cause__ or exc, ConnectionResetError) or "reset" in str(exc):
                hint = (
                    " The server closed the connection during the handshake: if that port "
                    "expects TLS, use amqps:// (and ?cafile=...)."
                )
            raise BrokerUnavailable(
                f"could not connect to RabbitMQ at {masked} within {limit:.0f} s "
                f"({type(exc).__name__}: {exc}). Is it running? Start one with "
                "`rabbitmq-server -detached`, or point LEVERET_URL at one." + hint
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        conn, self._connection = self._connection, None
        if conn is not None and not conn.is_closed:
            await conn.close()


_CLOSE_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncio.CancelledError)


async def _close_dead(conn: AbstractConnection) -> None:
    """Release what is left of a dropped connection; its errors no longer matter."""
    try:
        async with asyncio.timeout(2):
            await conn.close()
    except _CLOSE_ERRORS as exc:
        _reraise_if_cancelled(exc)
        log.debug("closing a dropped connection failed", exc_info=True)


def _reraise_if_cancelled(exc: BaseException) -> None:
    task = asyncio.current_task()
    if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
        raise exc
