"""A health server that did not get its port says so, on every event loop."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from leveret.ops import health
from leveret.ops.health import HealthServer


class SocketlessServer:
    """What uvloop returns when another process won the race to listen on the port."""

    sockets = (None,)
    closed = False

    def close(self) -> None:
        self.closed = True


async def test_a_lost_bind_race_raises_address_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    server = SocketlessServer()

    async def start_server(*args: Any, **kwargs: Any) -> SocketlessServer:
        return server

    monkeypatch.setattr(health.asyncio, "start_server", start_server)
    with pytest.raises(OSError, match="address already in use") as raised:
        await HealthServer({}, host="127.0.0.1", port=8000).start()
    assert raised.value.errno == errno.EADDRINUSE
    assert server.closed


async def test_a_taken_port_raises_address_in_use() -> None:
    first = await HealthServer({}, host="127.0.0.1", port=0).start()
    try:
        with pytest.raises(OSError, match="address already in use") as raised:
            await HealthServer({}, host="127.0.0.1", port=first.port).start()
        assert raised.value.errno == errno.EADDRINUSE
    finally:
        await first.close()
