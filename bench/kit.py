"""The testing kit: the engine's contract scenarios in memory, beside the same
scenarios on RabbitMQ (``leveret.testing.BrokerKit``) as the baseline."""

from __future__ import annotations

import time
import uuid

from bench.harness import Harness
from leveret.testing import BrokerKit, Kit
from tests.support.kit_scenarios import SCENARIOS, scenario_app


async def _memory_once() -> list[float]:
    took = []
    for scenario in SCENARIOS.values():
        started = time.perf_counter()
        async with Kit(scenario_app()) as kit:
            await scenario(kit)
        took.append(time.perf_counter() - started)
    return took


async def contract_scenarios(h: Harness, repeat: int) -> tuple[float, float, float]:
    """(scenarios/s in memory, scenarios/s on RabbitMQ, slowest in-memory scenario in s)."""
    memory: list[float] = []
    for _ in range(repeat):
        memory += await _memory_once()
    real_started = time.perf_counter()
    for scenario in SCENARIOS.values():
        namespace = f"{h.namespace}k{uuid.uuid4().hex[:6]}"
        async with BrokerKit(scenario_app(), h.url, namespace=namespace) as kit:
            await scenario(kit)
    real = time.perf_counter() - real_started
    return len(memory) / sum(memory), len(SCENARIOS) / real, max(memory)
