"""Weekly FULL retrain and two-hourly UPDATE; cron and timezone from personalize.yaml."""

from __future__ import annotations

import dagster as dg

from .jobs import full_retrain, update
from .settings import settings

_schedules = settings()["schedules"]

weekly_full_retrain = dg.ScheduleDefinition(
    name="weekly_full_retrain",
    job=full_retrain,
    cron_schedule=_schedules["full_retrain"]["cron"],
    execution_timezone=_schedules["full_retrain"]["timezone"],
    description="FULL retrain of the solution, metrics and batch inference.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

two_hourly_update = dg.ScheduleDefinition(
    name="two_hourly_update",
    job=update,
    cron_schedule=_schedules["update"]["cron"],
    execution_timezone=_schedules["update"]["timezone"],
    description="UPDATE of the latest FULL solution version with new data, then batch inference.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
