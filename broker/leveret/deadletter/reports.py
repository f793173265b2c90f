"""What the dead-letter operations report: groups of a summary, outcomes of a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from leveret.deadletter.letter import DeadLetter
from leveret.deadletter.move import MoveReport


@dataclass
class Group:
    """Dead letters of one task that died of one kind of error."""

    task: str | None
    kind: str
    count: int = 0
    queues: set[str] = field(default_factory=set)
    first: datetime | None = None
    last: datetime | None = None
    example: str = ""

    def add(self, letter: DeadLetter) -> None:
        self.count += 1
        self.queues.add(letter.queue)
        when = letter.failed_at
        if when is not None:
            if self.first is None or when < self.first:
                self.first = when
            if self.last is None or when > self.last:
                self.last = when
                self.example = letter.describe()
        elif not self.example:
            self.example = letter.describe()

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "error_type": self.kind,
            "count": self.count,
            "queues": sorted(self.queues),
            "first_failed_at": self.first.isoformat() if self.first else None,
            "last_failed_at": self.last.isoformat() if self.last else None,
            "example": self.example,
        }


@dataclass
class Report:
    """The outcome of a replay or purge, queue by queue."""

    action: str
    queues: list[MoveReport] = field(default_factory=list)
    dry_run: bool = False

    def _sum(self, name: str) -> int:
        return sum(int(getattr(q, name)) for q in self.queues)

    @property
    def total(self) -> int:
        return self._sum("total")

    @property
    def scanned(self) -> int:
        return self._sum("scanned")

    @property
    def matched(self) -> int:
        return self._sum("matched")

    @property
    def moved(self) -> int:
        return self._sum("moved")

    @property
    def kept(self) -> int:
        return self._sum("kept")

    @property
    def errors(self) -> list[str]:
        return [f"{q.queue}: {q.error}" for q in self.queues if q.error]


@dataclass
class ImportReport:
    """What an import read and published, per dead-letter queue."""

    lines: int = 0
    published: int = 0
    queues: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False
