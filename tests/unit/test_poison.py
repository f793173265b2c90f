"""The gate that runs a delivery which keeps coming back alone in its process."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leveret import message
from leveret.poison import ALONE_AFTER, Isolation, runs_alone


@given(returns=st.integers(0, 50), limit=st.one_of(st.none(), st.integers(0, 50)))
def test_a_delivery_runs_alone_before_it_can_reach_the_limit(
    returns: int, limit: int | None
) -> None:
    at_limit = limit is not None and returns >= max(limit, 1)
    expected = returns > 0 and (returns >= ALONE_AFTER or at_limit)
    assert runs_alone(returns, limit) is expected


def test_returns_adds_the_brokers_count_to_the_carried_one() -> None:
    assert message.returns(None) == 0
    assert message.returns({"x-delivery-count": 2}) == 2
    assert message.returns({message.RETURNS: 3, "x-delivery-count": 1}) == 4
    assert message.returns({message.RETURNS: b"2"}) == 2  # a foreign copy as bytes
    assert message.returns({message.RETURNS: "junk"}) == 0
    assert message.RETURNS not in message.copy_headers({"x-delivery-count": 1})


async def test_nothing_starts_while_a_delivery_runs_alone() -> None:
    gate = Isolation(asyncio.Event())
    order: list[str] = []

    async def normal(name: str, seconds: float) -> None:
        assert await gate.enter()
        order.append(f"{name} start")
        await asyncio.sleep(seconds)
        order.append(f"{name} end")
        gate.leave()

    async def suspect() -> None:
        async with gate.alone() as alone:
            assert alone
            assert gate.running == 0
            order.append("suspect start")
            await asyncio.sleep(0.05)
            order.append("suspect end")

    first = asyncio.create_task(normal("before", 0.1))
    await asyncio.sleep(0)  # one turn of the loop: it has entered
    alone = asyncio.create_task(suspect())
    await asyncio.sleep(0)
    assert gate.busy
    late = asyncio.create_task(normal("after", 0))
    await asyncio.gather(first, alone, late)
    assert order == [
        "before start",
        "before end",
        "suspect start",
        "suspect end",
        "after start",
        "after end",
    ]
    assert not gate.busy
    assert gate.running == 0


async def test_waiting_ends_when_the_worker_stops() -> None:
    stopping = asyncio.Event()
    gate = Isolation(stopping)
    assert await gate.enter()  # a long task holds the process

    async def suspect() -> bool:
        async with gate.alone() as alone:
            return alone

    waiting = asyncio.create_task(suspect())
    held = asyncio.create_task(gate.enter())
    await asyncio.sleep(0.02)
    assert not waiting.done()
    assert not held.done()
    stopping.set()
    assert await asyncio.wait_for(waiting, 30) is False
    assert await asyncio.wait_for(held, 30) is False
    assert not gate.busy


async def test_only_one_delivery_runs_alone_at_a_time() -> None:
    gate = Isolation(asyncio.Event())
    async with gate.alone():
        with pytest.raises(RuntimeError):
            async with gate.alone():
                pass
