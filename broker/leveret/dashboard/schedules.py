"""The Schedules page: what ``leveret schedules list`` shows, read the same way.

The leader's last status message (``leveret.scheduler.read_status``) gives the last
fired slot of each schedule, the next fire time it computed and who leads; a schedule
the leader has not written about yet gets its next time from its own timing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from leveret.scheduler import Schedules, read_status
from leveret.scheduler.control import Row, Status, overview


@dataclass(frozen=True)
class Board:
    """The schedules at one moment, with the leader's status they came from."""

    rows: list[Row]
    status: Status
    taken_at: datetime

    @property
    def heard_ago(self) -> float | None:
        """Seconds since the leader last wrote its status; None when none has."""
        if self.status.written_at is None:
            return None
        return (self.taken_at - self.status.written_at).total_seconds()

    def as_dict(self) -> dict[str, object]:
        status = self.status
        return {
            "schedules": [row.as_dict() for row in self.rows],
            "leader": status.leader,
            "leader_since": status.leader_since.isoformat() if status.leader_since else None,
            "status_written_at": status.written_at.isoformat() if status.written_at else None,
            "replicas": status.replicas,
            "taken_at": self.taken_at.isoformat(),
        }


async def read_board(schedules: Schedules) -> Board:
    status = await read_status(schedules)
    now = datetime.now(UTC)
    return Board(overview(schedules, status, now), status, now)
