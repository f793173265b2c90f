"""Declarations are idempotent; a clash with an existing queue says what to do."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from leveret import App, Task, TopologyMismatch


class Noop(BaseModel):
    pass


async def test_redeclaring_is_idempotent_and_a_clash_names_queue_and_argument(  # type: ignore[no-untyped-def]
    make_app,
) -> None:
    first: App = make_app()
    first.add(Task("noop", Noop, queue="shared"))
    await first.declare()
    await first.declare()

    second: App = make_app()
    second.queue("shared", max_priority=5)
    with pytest.raises(TopologyMismatch) as caught:
        await second.declare()
    text = str(caught.value)
    assert ".q.shared" in text
    assert "x-max-priority" in text
    assert "rabbitmqctl delete_queue" in text
