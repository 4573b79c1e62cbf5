"""Weekly FULL retrain and two-hourly UPDATE; cron and timezone from personalize.yaml."""

import dagster as dg

from .jobs import full_retrain, update
from .settings import settings


def _schedule(name: str, job, key: str, description: str) -> dg.ScheduleDefinition:
    spec = settings()["schedules"][key]
    return dg.ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule=spec["cron"],
        execution_timezone=spec["timezone"],
        description=description,
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )


weekly_full_retrain = _schedule("weekly_full_retrain", full_retrain, "full_retrain", "FULL retrain of the solution, metrics and batch inference.")
two_hourly_update = _schedule("two_hourly_update", update, "update", "UPDATE of the latest FULL solution version with new data, then batch inference.")
