"""Retry policy: how many attempts, how long between them, which errors are final.

The default is 10 attempts, 1 s doubling up to 1 h, with *equal* jitter: each delay
is drawn from [d/2, d]. Half the backoff is kept so a struggling dependency really
gets its breathing room; the other half is spread so a burst of failures does not
come back as a burst. ``full`` jitter ([0, d]) spreads more but can retry at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import pydantic

from leveret.errors import ConfigError, Permanent, Retry
from leveret.message import MAX_ATTEMPT

Jitter = Literal["equal", "full", "none"]


class DeadReason(StrEnum):
    """Why a message was dead-lettered, as recorded in the ``leveret-reason`` header."""

    EXHAUSTED = "exhausted"
    PERMANENT = "permanent"
    INVALID_PAYLOAD = "invalid-payload"  # fails the task's model
    MALFORMED = "malformed"  # not JSON, or a header or encoding breaks the wire format
    UNKNOWN_TASK = "unknown-task"
    MISROUTED = "misrouted"  # arrived on a queue its task does not belong on
    OVERSIZE = "oversize"
    DELIVERY_LIMIT = "delivery-limit"  # came back unsettled too often (its workers died)


#: Every reason a worker writes, so that whatever reads them (a filter, a dashboard)
#: can refuse a misspelt one rather than silently match nothing.
REASONS = tuple(reason.value for reason in DeadReason)


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often a failed task runs again."""

    max_attempts: int = 10
    base: float = 1.0
    factor: float = 2.0
    cap: float = 3600.0
    jitter: Jitter = "equal"
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    permanent: tuple[type[BaseException], ...] = (Permanent, pydantic.ValidationError)

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= MAX_ATTEMPT:
            raise ConfigError(
                f"max_attempts must be 1 to {MAX_ATTEMPT} (1 means: never retry), "
                f"got {self.max_attempts}"
            )
        if self.base < 0 or self.cap < 0 or self.factor < 1:
            raise ConfigError("backoff needs base >= 0, cap >= 0 and factor >= 1")

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        exponent = max(attempt - 1, 0)
        try:
            delay = min(self.cap, self.base * self.factor**exponent)
        except OverflowError:
            delay = self.cap
        if self.jitter == "full":
            return delay * rand()
        if self.jitter == "equal":
            return delay / 2 + delay / 2 * rand()
        return delay

    def decide(self, exc: BaseException, attempt: int) -> float | DeadReason:
        """After a failed attempt: a delay in seconds to retry, or a dead-letter reason."""
        if isinstance(exc, self.permanent) or not isinstance(exc, (*self.retry_on, Retry)):
            return DeadReason.PERMANENT
        if attempt >= self.max_attempts:
            return DeadReason.EXHAUSTED
        if isinstance(exc, Retry) and exc.delay is not None:
            return exc.delay
        return self.backoff(attempt)


NO_RETRY = RetryPolicy(max_attempts=1)
