"""Sending from Django: ``send_on_commit`` sends once the transaction commits, never on rollback.

Publisher confirms prove that RabbitMQ has a message; they cannot make it atomic with
the service's own database. Sending from ``transaction.on_commit`` closes half of that
gap: a rolled-back order sends nothing. The other half (the process dies between the
commit and the confirm) needs a transactional outbox.

The App is made once per process from Django's ``LEVERET`` setting, a dict of leveret
settings (``{"URL": "amqp://...", "NAMESPACE": "shop", "APP_ID": "shop"}``, keys in any
case), over the ``LEVERET_*`` environment variables. Pass ``app=`` to use your own.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings as django_settings
from django.db import transaction

from leveret.app import App
from leveret.errors import ConfigError
from leveret.task import M, Task

#: The Django setting read by ``get_app``.
SETTING = "LEVERET"

_app: App | None = None
_lock = threading.Lock()


def get_app() -> App:
    """The process's App, made on first use from ``settings.LEVERET`` and the environment."""
    global _app
    if _app is None:
        with _lock:
            if _app is None:
                _app = app_from_settings(getattr(django_settings, SETTING, None) or {})
    return _app


def app_from_settings(config: Mapping[str, Any]) -> App:
    """An App from a ``LEVERET``-style dict: leveret settings, plus ``APP_ID``."""
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"settings.{SETTING} must be a dict of leveret settings, e.g. "
            '{"URL": "amqp://user:pass@rabbitmq:5672/", "NAMESPACE": "shop"}, '
            f"not {type(config).__name__}"
        )
    fields = {str(key).lower(): value for key, value in config.items()}
    app_id = fields.pop("app_id", None)
    try:
        return App(app_id=app_id, **fields)
    except ValueError as exc:  # pydantic's ValidationError names the bad keys
        raise ConfigError(
            f"settings.{SETTING} is not valid: {exc}. Its keys are leveret's settings "
            "(URL, NAMESPACE, PUBLISH_DEADLINE, ...) and APP_ID"
        ) from None


def send_on_commit(
    task: Task[M],
    payload: M,
    *,
    priority: int | None = None,
    delay: timedelta | float | None = None,
    at: datetime | None = None,
    task_id: str | None = None,
    using: str | None = None,
    robust: bool = False,
    app: App | None = None,
) -> str:
    """Send ``task`` once the current transaction on ``using`` commits; return its id now.

    The payload, priority and delay are checked at once, so a wrong one raises here,
    where the transaction can still roll back. Outside a transaction it sends at once,
    as Django runs on-commit callbacks then. The send itself happens after the commit
    and blocks until RabbitMQ confirms; if it fails, Django raises its error from the
    commit (``robust=True``: logs it instead) - the rows stay committed either way.
    """
    target = app or get_app()
    target.sync.check(task, payload, priority=priority, delay=delay, at=at)
    frozen = payload.model_copy(deep=True)  # later changes to the caller's object do not leak in
    task_id = task_id or uuid.uuid4().hex

    def send() -> None:
        target.sync.send(task, frozen, priority=priority, delay=delay, at=at, task_id=task_id)

    transaction.on_commit(send, using=using, robust=robust)
    return task_id
