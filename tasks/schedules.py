"""The demo's recurring tasks: run by ``leveret scheduler tasks.schedules:app`` (two
replicas in deploy/k8s; one fires, the other stands by)."""

from __future__ import annotations

from datetime import datetime

from leveret.scheduler import CatchUp, Schedules
from tasks.contracts import Thumbnail, make_thumbnail
from tasks.handlers import app

schedules = Schedules(app)


def banner_of(slot: datetime) -> Thumbnail:
    """Each night's banner is a new image: its id names the day."""
    return Thumbnail(image_id=f"banner-{slot:%Y-%m-%d}", width=1200, height=300)


# 02:30 Berlin time every night; after an outage, the last missed night is made up.
schedules.cron(
    "nightly-banner",
    make_thumbnail,
    banner_of,
    "30 2 * * *",
    timezone="Europe/Berlin",
    missed=CatchUp(1),
    jitter=60,
)

__all__ = ["app", "schedules"]
