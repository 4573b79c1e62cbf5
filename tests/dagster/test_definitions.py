"""The code location loads, with both schedules, both jobs and blocking GE checks."""

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


def test_sensors_and_schedules_ship_stopped():
    assert {s.name for s in defs.sensors} == {"new_dataset_files", "record_run_failures", "batch_job_shards"}
    for definition in [*defs.schedules, *defs.sensors]:
        assert definition.default_status.value == "STOPPED", definition.name
    for job in ("full_retrain", "update", "validate_dataset"):
        assert int(defs.resolve_job_def(job).tags["dagster/max_runtime"]) > 0
