"""One place for configuration: typed, and each field also an environment variable.

Every field reads ``LEVERET_<FIELD>`` (``LEVERET_URL``, ``LEVERET_NAMESPACE``, ...);
the URL also falls back to ``RABBITMQ_URL``. Defaults are the safe ones.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

QueueType = Literal["classic", "quorum"]

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"


class Settings(BaseSettings):
    """Connection, topology and runtime settings shared by producers and workers."""

    # hide_input_in_errors: a rejected URL would otherwise be echoed, password and all.
    model_config = SettingsConfigDict(
        env_prefix="LEVERET_", extra="forbid", frozen=True, hide_input_in_errors=True
    )

    url: str = Field(
        default=DEFAULT_URL,
        validation_alias=AliasChoices("LEVERET_URL", "RABBITMQ_URL", "url"),
        description="AMQP URL; amqps:// for TLS. Several, comma-separated, for the nodes "
        "of a cluster: connections go to the next one when one fails.",
    )
    namespace: str = Field(
        default="leveret",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Prefix of every exchange and queue this system declares.",
    )
    heartbeat: int = Field(default=10, ge=0, description="Seconds; 5-20 finds a dead peer quickly.")
    connect_deadline: float = Field(
        default=30.0, gt=0, description="Seconds to keep retrying the first connect."
    )
    confirm_timeout: float = Field(
        default=15.0, gt=0, description="Seconds to wait for one publisher confirm."
    )
    publish_deadline: float = Field(
        default=30.0, gt=0, description="Seconds a send keeps retrying before it raises."
    )
    max_payload_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Larger bodies are refused and dead-lettered."
    )
    max_priority: int = Field(
        default=10, ge=1, le=255, description="x-max-priority of classic work queues."
    )
    queue_type: QueueType = Field(
        default="classic", description="Work queues not configured otherwise."
    )
    priority_bands: tuple[int, ...] = Field(
        default=(),
        description="Priority bands of quorum work queues not configured otherwise, as "
        "JSON (LEVERET_PRIORITY_BANDS=[5]): strict priorities on a replicated queue.",
    )
    delay_queue_type: QueueType = Field(
        default="classic",
        description="The delay ladder; quorum (at-least-once dead-lettering) for clusters.",
    )
    delay_unit_ms: int = Field(
        default=10, gt=0, description="TTL of delay level 0; part of the topology."
    )
    delay_levels: int = Field(
        default=32, ge=1, le=40, description="Number of delay levels; part of the topology."
    )
    task_timeout: float = Field(
        default=600.0, gt=0, description="Seconds a task may run unless it sets its own timeout."
    )
    consumer_timeout: float = Field(
        default=1800.0,
        gt=0,
        description="The broker's consumer_timeout in seconds; task timeouts must fit under it.",
    )

    @field_validator("url")
    @classmethod
    def _amqp_scheme(cls, value: str) -> str:
        urls = [url.strip() for url in value.split(",") if url.strip()]
        if not urls or not all(url.startswith(("amqp://", "amqps://")) for url in urls):
            raise ValueError(
                "must be one AMQP URL or several separated by commas, each starting with "
                "amqp:// or amqps://, e.g. " + DEFAULT_URL
            )
        return ",".join(urls)

    @field_validator("priority_bands", mode="before")
    @classmethod
    def _bands_from_text(cls, value: object) -> object:
        """``[1,3,5]`` or ``1,3,5``, as an environment variable or a flag gives them."""
        if not isinstance(value, str):
            return value
        text = value.strip().strip("[]()")
        try:
            return tuple(int(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise ValueError(
                f"{value!r} is not a list of priorities: give the lowest priority of each "
                "band above the base one, ascending, e.g. [5] or [1,3,5,9]"
            ) from None

    @property
    def urls(self) -> list[str]:
        """The node URLs in the order connections try them."""
        return self.url.split(",")

    @property
    def max_delay_seconds(self) -> float:
        """The longest delay the ladder can express."""
        return float((2**self.delay_levels - 1) * self.delay_unit_ms / 1000)
