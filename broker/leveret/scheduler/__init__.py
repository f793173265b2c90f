"""Recurring tasks: schedules declared in code, fired by replicas of which one leads.

    from leveret.scheduler import CatchUp, Schedules

    schedules = Schedules(app)
    schedules.cron("nightly-report", report, Report(kind="daily"), "0 2 * * *",
                   timezone="Europe/Berlin", missed=CatchUp(3))

Run ``leveret scheduler MODULE:APP`` (as many replicas as you like). Each slot is
sent once, as a confirmed task whose id is ``name@slot`` (e.g.
``nightly-report@2026-12-01T02:00:00+01:00``); see docs/scheduler.md for how the
leader is chosen and where the last fired slot is kept.

This module is public: ``Schedules``, ``Schedule``, ``Cron``, ``Every``, ``Skip``,
``CatchUp``, ``Scheduler``, ``SchedulerMetrics``, ``read_status`` and ``run_now``.
"""

from leveret.scheduler.control import Status, read_status, run_now
from leveret.scheduler.metrics import SchedulerMetrics
from leveret.scheduler.runner import Scheduler
from leveret.scheduler.schedule import CatchUp, MissedPolicy, Plan, Schedule, Skip, plan
from leveret.scheduler.schedules import Schedules
from leveret.scheduler.timing import Cron, Every, Timing

__all__ = [
    "CatchUp",
    "Cron",
    "Every",
    "MissedPolicy",
    "Plan",
    "Schedule",
    "Scheduler",
    "SchedulerMetrics",
    "Schedules",
    "Skip",
    "Status",
    "Timing",
    "plan",
    "read_status",
    "run_now",
]
