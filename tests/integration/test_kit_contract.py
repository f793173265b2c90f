"""The in-memory kit agrees with RabbitMQ: each engine scenario runs on both, and
the outcomes of every attempt and every ``leveret-*`` header of the dead letters
must be the same (moments compared by type, tracebacks by their last line)."""

from __future__ import annotations

import pytest

from leveret.testing import BrokerKit, Kit
from tests.support.kit_scenarios import SCENARIOS, Result, scenario_app

EXPECTED_OUTCOMES = {
    "retry_backoff": ["retried", "retried", "succeeded"],
    "retry_delay": ["retried", "succeeded"],
    "delayed_send": ["succeeded"],
    "priorities": ["succeeded"] * 5,
    "permanent": ["failed-permanently"],
    "exhausted": ["retried", "retried", "dead-lettered"],
    "time_limit": ["dead-lettered"],
    "invalid_payload": [],
    "unknown_task": [],
    "delivery_limit": [],
    "replay": ["failed-permanently", "succeeded"],
}

EXPECTED_REASONS = {
    "permanent": ["permanent"],
    "exhausted": ["exhausted"],
    "time_limit": ["exhausted"],
    "invalid_payload": ["invalid-payload"],
    "unknown_task": ["unknown-task"],
    "delivery_limit": ["delivery-limit"],
}


async def on_memory(name: str) -> Result:
    async with Kit(scenario_app()) as kit:
        return await SCENARIOS[name](kit)


async def on_rabbitmq(name: str, url: str, namespace: str) -> Result:
    async with BrokerKit(scenario_app(), url, namespace=namespace) as kit:
        return await SCENARIOS[name](kit)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_memory_and_rabbitmq_agree(name: str, amqp_url: str, namespace: str) -> None:
    memory = await on_memory(name)
    real = await on_rabbitmq(name, amqp_url, namespace)
    assert memory.outcomes == EXPECTED_OUTCOMES[name]
    assert [d["leveret-reason"] for d in memory.dead] == EXPECTED_REASONS.get(name, [])
    assert real.outcomes == memory.outcomes
    assert real.attempts == memory.attempts
    assert real.dead == memory.dead
    assert real.extra == memory.extra
