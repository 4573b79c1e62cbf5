"""The code location loads, with both schedules, both jobs and blocking GE checks."""

import datetime as dt

import dagster as dg

from assets.checks import ge_checks
from assets.definitions import defs


def test_definitions_load_with_jobs_schedules_and_checks():
    dg.Definitions.validate_loadable(defs)
    assert {j.name for j in defs.jobs} >= {"full_retrain", "update"}
    assert {s.name for s in defs.schedules} == {"weekly_full_retrain", "two_hourly_update"}
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {
        "raw_interactions",
        "validated_interactions",
        "validated_items",
        "validated_users",
        "featurized_dataset",
        "solution_version",
        "solution_metrics",
        "batch_inference_output",
    } <= keys
    for check in ge_checks:
        [spec] = list(check.check_specs)
        assert spec.blocking, spec.name


def test_update_job_does_not_compute_metrics():
    update = defs.resolve_job_def("update")
    full = defs.resolve_job_def("full_retrain")
    assert "solution_metrics" not in {n.name for n in update.graph.node_defs}
    assert "solution_metrics" in {n.name for n in full.graph.node_defs}
    assert update.tags["personalize/solution"] == full.tags["personalize/solution"]


def test_schedules_request_valid_runs_at_their_ticks():
    weekly = defs.resolve_schedule_def("weekly_full_retrain")
    hourly = defs.resolve_schedule_def("two_hourly_update")
    assert weekly.cron_schedule == "0 3 * * 0" and hourly.cron_schedule == "0 */2 * * *"
    assert weekly.execution_timezone == "UTC" and hourly.execution_timezone == "UTC"
    for schedule, mode in ((weekly, "FULL"), (hourly, "UPDATE")):
        context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 22, 4, tzinfo=dt.timezone.utc))
        [request] = schedule.evaluate_tick(context).run_requests
        job = defs.resolve_job_def(schedule.job_name)
        assert dg.validate_run_config(job, request.run_config or {})
        assert job.tags["personalize/training_mode"] == mode
        assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
