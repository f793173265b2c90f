"""SingleFlight: concurrent callers share one run of a setup, and its failure."""

from __future__ import annotations

import asyncio

import pytest

from leveret.sending import SingleFlight


async def test_concurrent_callers_share_one_run() -> None:
    flight, runs = SingleFlight(), []

    async def setup() -> None:
        runs.append(1)
        await asyncio.sleep(0.01)

    await asyncio.gather(*(flight.run("core", setup) for _ in range(50)))
    assert len(runs) == 1


async def test_a_failure_reaches_every_waiter_and_is_not_kept() -> None:
    flight, runs = SingleFlight(), []

    async def failing() -> None:
        runs.append(1)
        await asyncio.sleep(0.01)
        raise RuntimeError("broker said no")

    results = await asyncio.gather(
        *(flight.run("core", failing) for _ in range(10)), return_exceptions=True
    )
    assert [type(r) for r in results] == [RuntimeError] * 10
    assert len(runs) == 1
    with pytest.raises(RuntimeError):
        await flight.run("core", failing)
    assert len(runs) == 2


async def test_one_caller_cancelled_does_not_cancel_the_run_others_await() -> None:
    flight, done = SingleFlight(), asyncio.Event()

    async def setup() -> None:
        await asyncio.sleep(0.02)
        done.set()

    first = asyncio.create_task(flight.run("core", setup))
    second = asyncio.create_task(flight.run("core", setup))
    await asyncio.sleep(0)
    first.cancel()
    await second
    assert done.is_set()
    assert first.cancelled()


async def test_keys_run_independently() -> None:
    flight, seen = SingleFlight(), []

    async def setup(key: str) -> None:
        seen.append(key)

    await asyncio.gather(flight.run("a", lambda: setup("a")), flight.run("b", lambda: setup("b")))
    assert sorted(seen) == ["a", "b"]
