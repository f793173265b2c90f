"""The dashboard's own settings: where it listens and who may change things.

Every field reads ``LEVERET_DASHBOARD_<FIELD>``; ``leveret dashboard`` flags set the
same fields. No credential has a default: without a token or a user and password the
dashboard is read-only, whatever ``read_only`` says.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from leveret.errors import ConfigError


class DashboardSettings(BaseSettings):
    """How the dashboard serves, authenticates and scans."""

    model_config = SettingsConfigDict(
        env_prefix="LEVERET_DASHBOARD_", extra="forbid", frozen=True, hide_input_in_errors=True
    )

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    token: SecretStr | None = Field(
        default=None, description="Bearer token (Authorization: Bearer ...) for changes."
    )
    user: str | None = Field(default=None, description="Basic-auth user for changes.")
    password: SecretStr | None = Field(default=None, description="Basic-auth password.")
    read_only: bool = Field(default=False, description="Refuse every change, whoever asks.")
    management_url: str | None = Field(
        default=None,
        description="RabbitMQ management API, e.g. http://guest:guest@localhost:15672; "
        "unset: derived from the AMQP URL (port 15672).",
    )
    management_retry_seconds: float = Field(
        default=60.0,
        gt=0,
        description="After the management API failed, the queues page reads AMQP for "
        "this long before asking the API again (each try may wait up to 2 s).",
    )
    scan_limit: int = Field(
        default=200_000,
        ge=1,
        description="Dead letters read per grouping scan; the page says when it stopped short.",
    )
    rescan_seconds: float = Field(
        default=30.0, gt=0, description="How often the dead-letter groups are recomputed."
    )
    page_size: int = Field(default=50, ge=1, le=1000, description="Letters per page.")

    @model_validator(mode="after")
    def _pairs(self) -> DashboardSettings:
        if (self.user is None) != (self.password is None):
            raise ConfigError(
                "give both LEVERET_DASHBOARD_USER and LEVERET_DASHBOARD_PASSWORD "
                "(--user/--password), or neither"
            )
        if self.token is not None and len(self.token.get_secret_value()) < 16:
            raise ConfigError(
                "the dashboard token must be at least 16 characters: generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return self

    @property
    def can_change(self) -> bool:
        """True when some credential is configured and read-only mode is off."""
        configured = self.token is not None or self.user is not None
        return configured and not self.read_only
