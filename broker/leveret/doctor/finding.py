"""One problem ``leveret doctor`` found, with its fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Finding:
    """One problem: which check found it, on what, what is wrong, and what to do."""

    check: str
    subject: str
    problem: str
    fix: str

    def line(self) -> str:
        return f"{self.check}: {self.subject}: {self.problem}. Fix: {self.fix}"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)
