"""Per solution S: ``S__weekly_full_retrain`` and ``S__two_hourly_update``, cron and time zone
from S's ``schedules`` in personalize.yaml, run config from S's ``batch_inference``.

The UPDATE schedule looks at S's solution store and the dataset location on each tick and
skips, with the reason shown on the tick, when there is no FULL version yet or no data the
latest version was not trained on (``personalize_pipeline.changes.update_check``)."""

import dagster as dg

from personalize_pipeline.changes import update_check
from personalize_pipeline.config import Solution
from personalize_pipeline.errors import InputError

from .jobs import run_config
from .resources import ArtifactStore, DatasetSource


def solution_schedules(solution: Solution, full_job, update_job) -> list[dg.ScheduleDefinition]:
    name, spec = solution.name, solution.schedules
    weekly = dg.ScheduleDefinition(
        name=f"{name}__weekly_full_retrain",
        job=full_job,
        cron_schedule=spec.full,
        execution_timezone=spec.timezone,
        run_config=run_config(solution, "FULL"),
        description=f"FULL retrain of {name}, metrics and batch inference as configured.",
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
    update_config = run_config(solution, "UPDATE")

    @dg.schedule(
        name=f"{name}__two_hourly_update",
        job=update_job,
        cron_schedule=spec.update,
        execution_timezone=spec.timezone,
        description=(
            f"UPDATE of the latest FULL version of {name} with new data, then batch inference; skips when there is "
            "nothing to do."
        ),
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
    def two_hourly_update(
        context: dg.ScheduleEvaluationContext, dataset_source: DatasetSource, artifact_store: ArtifactStore
    ):
        try:
            check = update_check(dataset_source.root(), artifact_store.solution(name))
        except InputError as exc:
            return dg.SkipReason(f"cannot look for new data: {exc.message}")
        if not check.needed:
            return dg.SkipReason(check.reason)
        context.log.info(check.reason)
        tick = context.scheduled_execution_time
        return dg.RunRequest(
            run_key=f"{name}-update-{tick.isoformat() if tick else check.latest_version}",
            run_config=update_config,
            tags={"personalize/reason": check.reason[:200], "personalize/base_version": check.latest_version or ""},
        )

    return [weekly, two_hourly_update]
