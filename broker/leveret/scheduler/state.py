"""The durable state of the schedules: for each one, the newest slot already settled
(fired, or given up by its missed-slot policy), so that a new leader neither repeats
nor skips a slot.

Each state message holds the whole map. Several may be in the lease queue at once (a
write whose delivery has not come back yet, an empty one a replica published when it
joined); they are merged by taking each schedule's newest slot, so none can set a
schedule back and reading them in any order gives the same state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

#: Schedule name -> the newest slot settled.
State = dict[str, datetime]


def encode(state: Mapping[str, datetime], **extra: Any) -> bytes:
    body = {"through": {name: slot.isoformat() for name, slot in sorted(state.items())}}
    return json.dumps({**body, **extra}, separators=(",", ":")).encode()


def decode(body: bytes) -> State:
    """The map in a state message; a message that is not one counts as empty (and is
    acknowledged away by the leader once a good state covers it)."""
    try:
        raw = json.loads(body)
        through = raw.get("through", {}) if isinstance(raw, dict) else {}
        return {str(name): datetime.fromisoformat(slot) for name, slot in through.items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def merge(into: State, other: Mapping[str, datetime]) -> bool:
    """Take each schedule's newer slot into ``into``; True if anything changed."""
    changed = False
    for name, slot in other.items():
        known = into.get(name)
        if known is None or slot > known:
            into[name] = slot
            changed = True
    return changed


def covers(state: Mapping[str, datetime], other: Mapping[str, datetime]) -> bool:
    """Whether ``state`` knows every schedule of ``other`` at the same slot or newer."""
    return all(name in state and state[name] >= slot for name, slot in other.items())
