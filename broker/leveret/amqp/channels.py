"""Closing a channel without ever cancelling the close halfway.

aiormq answers a cancelled call on a channel by sending ``channel.close`` again; when
the cancelled call was the ``channel.close`` itself, RabbitMQ 4 takes the second one
as a protocol error and closes the whole connection (``CHANNEL_ERROR - expected
'channel.open'``), with every other channel on it. A browse or a consumer stopped by
a cancellation therefore finishes closing its channel first, then stops.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel

log = logging.getLogger(__name__)

#: What a call on a channel raises when the channel or its connection is going away
#: (aiormq refuses calls on a channel it is closing with a ``RuntimeError``).
CHANNEL_GONE: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    TimeoutError,
    ConnectionError,
)

#: Seconds a cancelled caller still waits for its channel's close to complete.
CLOSE_WAIT = 5.0


def retrieve(future: asyncio.Future[Any]) -> None:
    """Take the outcome of a call nobody waits for any more, so none goes unreported."""
    if not future.cancelled() and future.exception() is not None:
        log.debug("a call nobody waited for failed: %s", future.exception())


async def close_quietly(channel: AbstractChannel) -> None:
    """Close ``channel``; never raises for a channel already gone, never half-closes.

    The broker takes back whatever the channel held unacknowledged.
    """
    if channel.is_closed:
        return
    closing = asyncio.ensure_future(channel.close())
    closing.add_done_callback(retrieve)
    try:
        await asyncio.shield(closing)
    except asyncio.CancelledError:
        await asyncio.wait({closing}, timeout=CLOSE_WAIT)
        raise
    except CHANNEL_GONE:
        log.debug("closing a channel failed", exc_info=True)
