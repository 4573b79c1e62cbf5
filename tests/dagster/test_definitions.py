"""The code location loads from personalize.yaml, with each solution's jobs, schedules and
sensors under its name and blocking GE checks on the shared validated datasets."""

import dagster as dg

from assets.checks import ge_checks
from assets.definitions import defs


def test_definitions_load_with_jobs_schedules_and_checks():
    dg.Definitions.validate_loadable(defs)
    assert {j.name for j in defs.jobs} >= {"demo__full_retrain", "demo__update", "demo__batch_jobs", "validate_dataset"}
    assert {s.name for s in defs.schedules} == {"demo__weekly_full_retrain", "demo__two_hourly_update"}
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {
        "raw_interactions",
        "validated_interactions",
        "validated_items",
        "validated_users",
        "demo/featurized_dataset",
        "demo/solution_version",
        "demo/solution_metrics",
        "demo/batch_inference_output",
        "demo/batch_job_output",
    } <= keys
    for check in ge_checks:
        [spec] = list(check.check_specs)
        assert spec.blocking, spec.name


def test_update_job_does_not_compute_metrics():
    update = defs.resolve_job_def("demo__update")
    full = defs.resolve_job_def("demo__full_retrain")
    assert "demo__solution_metrics" not in {n.name for n in update.graph.node_defs}
    assert "demo__solution_metrics" in {n.name for n in full.graph.node_defs}
    assert update.tags["personalize/solution"] == full.tags["personalize/solution"] == "demo"


def test_sensors_and_schedules_ship_stopped():
    assert {s.name for s in defs.sensors} == {"new_dataset_files", "record_run_failures", "demo__batch_job_shards"}
    for definition in [*defs.schedules, *defs.sensors]:
        assert definition.default_status.value == "STOPPED", definition.name
    for job in ("demo__full_retrain", "demo__update", "validate_dataset"):
        assert int(defs.resolve_job_def(job).tags["dagster/max_runtime"]) > 0


def test_a_misspelt_key_stops_the_code_location_with_one_line(tmp_path, monkeypatch):
    import importlib

    import pytest

    import assets.definitions
    from assets.settings import settings
    from personalize_pipeline.errors import InputError

    config = tmp_path / "personalize.yaml"
    config.write_text("solutions:\n  - name: foryou\n    batch_inferance: {num_results: 5}\n")
    monkeypatch.setenv("PERSONALIZE_CONFIG", str(config))
    settings.cache_clear()
    try:
        with pytest.raises(InputError) as err:
            importlib.reload(assets.definitions)  # what `dagster dev` / the code server does on load
        assert str(err.value) == f"{config}: solutions[0].batch_inferance: unknown key"
    finally:
        monkeypatch.delenv("PERSONALIZE_CONFIG")
        settings.cache_clear()
        importlib.reload(assets.definitions)


def test_scheduled_batch_config_follows_the_recipe():
    from assets.inference import scheduled_batch_config
    from personalize_pipeline.config import Solution

    explore = Solution(
        name="foryou",
        recipe="aws-user-personalization",
        batch_inference={"exploration_weight": 0.1, "filter": "EXCLUDE ItemID WHERE Items.GENRE IN ($G)"},
    )
    assert scheduled_batch_config(explore) == {
        "input": "",
        "num_results": 25,
        "filter_values": {},
        "filter_expression": "EXCLUDE ItemID WHERE Items.GENRE IN ($G)",
        "exploration_weight": 0.1,
        "exploration_item_age_cut_off": 30.0,
    }
    assert "exploration_weight" not in scheduled_batch_config(Solution(name="similar", recipe="aws-sims"))
