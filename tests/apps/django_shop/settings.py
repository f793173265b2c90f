"""The project's Django settings, for one PostgreSQL database and schema."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit


def settings_for(database_url: str, schema: str, leveret: dict[str, Any]) -> dict[str, Any]:
    """Django settings with the database at ``database_url``, tables in ``schema``."""
    db = urlsplit(database_url)
    return {
        "DEBUG": False,
        "SECRET_KEY": "test-only",
        "USE_TZ": True,
        "INSTALLED_APPS": ["tests.apps.django_shop"],
        "DATABASES": {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": db.path.lstrip("/"),
                "USER": db.username or "",
                "PASSWORD": db.password or "",
                "HOST": db.hostname or "",
                "PORT": str(db.port or 5432),
                "OPTIONS": {"options": f"-c search_path={schema}"},
            }
        },
        "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
        "LEVERET": leveret,
    }
