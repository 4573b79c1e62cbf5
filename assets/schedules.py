"""Weekly FULL retrain and two-hourly UPDATE; cron and timezone from personalize.yaml.

The UPDATE schedule looks at the solution store and the dataset location on each tick and
skips, with the reason shown on the tick, when there is no FULL version yet or no data the
latest version was not trained on (``personalize_pipeline.changes.update_check``)."""

import dagster as dg

from personalize_pipeline.changes import update_check
from personalize_pipeline.errors import InputError

from .jobs import full_retrain, update
from .resources import ArtifactStore, DatasetSource, SolutionResource
from .settings import settings


def _spec(key: str) -> dict:
    return settings()["schedules"][key]


weekly_full_retrain = dg.ScheduleDefinition(
    name="weekly_full_retrain",
    job=full_retrain,
    cron_schedule=_spec("full_retrain")["cron"],
    execution_timezone=_spec("full_retrain")["timezone"],
    description="FULL retrain of the solution, metrics and batch inference.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)


@dg.schedule(
    name="two_hourly_update",
    job=update,
    cron_schedule=_spec("update")["cron"],
    execution_timezone=_spec("update")["timezone"],
    description="UPDATE of the latest FULL solution version with new data, then batch inference; skips when there is nothing to do.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def two_hourly_update(
    context: dg.ScheduleEvaluationContext, dataset_source: DatasetSource, artifact_store: ArtifactStore, solution: SolutionResource
):
    try:
        check = update_check(dataset_source.root(), artifact_store.solution(solution.name))
    except InputError as exc:
        return dg.SkipReason(f"cannot look for new data: {exc.message}")
    if not check.needed:
        return dg.SkipReason(check.reason)
    context.log.info(check.reason)
    tick = context.scheduled_execution_time
    return dg.RunRequest(
        run_key=f"update-{tick.isoformat() if tick else check.latest_version}",
        tags={"personalize/reason": check.reason[:200], "personalize/base_version": check.latest_version or ""},
    )
