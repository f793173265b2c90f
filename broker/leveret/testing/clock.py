"""The virtual clock of the in-memory kit: time moves only when a test moves it."""

from __future__ import annotations

import time

from leveret.errors import InvalidArgument


class Clock:
    """Seconds since the kit started; ``advance`` is the only way forward."""

    def __init__(self) -> None:
        self.now = 0.0
        self._wall_start = time.time()

    def advance_to(self, when: float) -> None:
        if when < self.now:
            raise InvalidArgument(
                f"the clock cannot go back: it is at {self.now:g} s and {when:g} s was asked "
                "for; advance by a positive number of seconds"
            )
        self.now = when

    def wall(self) -> float:
        """Epoch seconds on the virtual clock (wall time at the start, plus ``now``)."""
        return self._wall_start + self.now

    def __call__(self) -> float:
        return self.now
