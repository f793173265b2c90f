"""Payload models that many tests share, because their shape is all they need.

A test whose payload carries meaning of its own (a due time, a failure count, nested
types) keeps its own model beside it.
"""

from __future__ import annotations

from pydantic import BaseModel


class Job(BaseModel):
    """A numbered task: enough to tell tasks apart and to count them."""

    n: int


class Sleep(BaseModel):
    """A task that takes a while: how long is the payload."""

    seconds: float
