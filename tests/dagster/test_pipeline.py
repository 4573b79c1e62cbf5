"""End to end in Dagster: the whole graph on demo data, batch output to a real S3 server
(SeaweedFS), UPDATE after FULL, and a failed GE check blocking everything downstream."""

import json
import shutil

import dagster as dg
import pandas as pd
import pytest
from pipeline_resources import pipeline_defs

from personalize_pipeline.locations import Location


def make_defs(dataset, artifacts, output, s3=None):
    return pipeline_defs(dataset, artifacts, output, s3=s3)


def run(defs, job_name, instance, run_config=None):
    return defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, raise_on_error=False, run_config=run_config
    )


def latest_md(instance, key):
    """Metadata of the latest materialization of ``key`` (shared validated_* or solution demo's)."""
    asset_key = dg.AssetKey(key) if key.startswith("validated_") else dg.AssetKey(["demo", key])
    return instance.get_latest_materialization_event(asset_key).asset_materialization.metadata


def test_full_then_update_with_batch_output_on_s3(demo_small, tmp_path, s3_bucket):
    from assets.resources import S3Settings

    server, bucket = s3_bucket
    s3 = S3Settings(endpoint_url=server.endpoint_url, access_key_id="test", secret_access_key="test-secret")
    defs = make_defs(demo_small, tmp_path / "artifacts", f"{bucket}/recommendations", s3=s3)
    instance = dg.DagsterInstance.ephemeral()
    job_input = str(demo_small / "batch-input" / "users.jsonl")
    run_config = {"ops": {"demo__batch_inference_output": {"config": {"input": job_input, "num_results": 10}}}}

    result = run(defs, "demo__full_retrain", instance, run_config)
    assert result.success
    checks = {e.asset_key.to_user_string(): e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "validated_interactions": True,
        "validated_items": True,
        "validated_users": True,
        "demo/solution_metrics": True,
    }

    md = latest_md(instance, "batch_inference_output")
    out_url = md["path"].value
    assert out_url.startswith(f"{bucket}/recommendations/demo/") and out_url.endswith("/users.jsonl.out")
    fs = server.filesystem("test", "test-secret")
    lines = fs.cat(out_url.removeprefix("s3://")).decode().splitlines()
    n_input = len((demo_small / "batch-input" / "users.jsonl").read_text().splitlines())
    assert len(lines) == n_input
    for line in lines:
        row = json.loads(line)
        assert row["error"] is None and len(row["output"]["recommendedItems"]) == 10
        assert len(row["output"]["scores"]) == 10 and set(row["input"]) == {"userId"}

    metrics = latest_md(instance, "solution_metrics")
    assert 0 < metrics["precision_at_25"].value < 1
    assert metrics["baseline/precision_at_25"].value == metrics["precision_at_25"].value
    full_md = latest_md(instance, "solution_version")
    assert full_md["training_mode"].value == "FULL"
    manifest = Location(full_md["path"].value).child("manifest.json").read_json()
    assert manifest["metrics"]["metrics"]["precision_at_25"] == pytest.approx(metrics["precision_at_25"].value)
    profile = latest_md(instance, "validated_interactions")
    assert profile["dagster/row_count"].value > 1000 and "TIMESTAMP" in profile["profile"].value
    # every stage records its seconds and the peak memory of its process (personalize_pipeline.measure)
    for key in (
        "validated_interactions",
        "validated_items",
        "featurized_dataset",
        "solution_version",
        "solution_metrics",
        "batch_inference_output",
    ):
        md = latest_md(instance, key)
        assert md["seconds"].value >= 0 and md["peak_rss_mb"].value > 50, key
    [check] = [
        e for e in result.get_asset_check_evaluations() if e.asset_key.to_user_string() == "validated_interactions"
    ]
    assert check.metadata["seconds"].value > 0 and check.metadata["peak_rss_mb"].value > 50

    # UPDATE: new interactions arrive; the update job starts from the FULL version
    result = run(defs, "demo__update", instance, run_config)
    assert result.success
    upd = latest_md(instance, "solution_version")
    assert upd["training_mode"].value == "UPDATE"
    assert upd["base_version"].value == full_md["solution_version"].value
    assert "demo/solution_metrics" not in {
        e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
    }
    outputs = fs.find(f"{bucket.removeprefix('s3://')}/recommendations/demo/")
    assert len([o for o in outputs if o.endswith(".out")]) == 2


def test_failed_ge_check_blocks_training_and_keeps_earlier_outputs(demo_small, tmp_path):
    dataset = tmp_path / "dataset"
    shutil.copytree(demo_small, dataset)
    artifacts, output = tmp_path / "artifacts", tmp_path / "output"
    defs = make_defs(dataset, artifacts, output)
    instance = dg.DagsterInstance.ephemeral()
    assert run(defs, "demo__full_retrain", instance).success
    index_before = (artifacts / "solutions" / "demo" / "solution.json").read_bytes()
    outputs_before = sorted(p.relative_to(output) for p in output.rglob("*"))

    df = pd.read_csv(dataset / "interactions.csv", dtype=str, keep_default_na=False)
    df.loc[10, "TIMESTAMP"] = "not-a-time"
    df.to_csv(dataset / "interactions.csv", index=False)

    result = run(defs, "demo__full_retrain", instance)
    assert not result.success
    [failed] = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed.asset_key.to_user_string() == "validated_interactions"
    assert "TIMESTAMP" in failed.description and "not-a-time" in failed.description and "line 12" in failed.description
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "demo/featurized_dataset" not in materialized and "demo/solution_version" not in materialized
    assert (artifacts / "solutions" / "demo" / "solution.json").read_bytes() == index_before
    assert sorted(p.relative_to(output) for p in output.rglob("*")) == outputs_before


def test_materialize_selection_blocked_by_check(demo_small, tmp_path):
    """The same through dg.materialize, as users of the asset graph call it."""
    dataset = tmp_path / "dataset"
    shutil.copytree(demo_small, dataset)
    (dataset / "interactions.csv").write_text(
        (dataset / "interactions.csv").read_text().replace("TIMESTAMP", "WHEN", 1)
    )
    defs = pipeline_defs(dataset, tmp_path / "a", tmp_path / "o")
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        resources=defs.resources,
        selection=dg.AssetSelection.groups("dataset_group", "demo")
        - dg.AssetSelection.assets(["demo", "solution_metrics"], ["demo", "batch_job_output"]),
        raise_on_error=False,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert not result.success
    [failed] = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert "TIMESTAMP" in failed.description
    assert not (tmp_path / "a" / "solutions").exists()


def test_update_without_full_fails_with_clear_message(demo_small, tmp_path):
    defs = make_defs(demo_small, tmp_path / "a", tmp_path / "o")
    instance = dg.DagsterInstance.ephemeral()
    result = run(defs, "demo__update", instance)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "UPDATE needs a FULL solution version" in failure.event_specific_data.error.message


def test_hrnn_run_shows_plots_and_training_metadata(demo_small, tmp_path):
    import base64

    defs = pipeline_defs(demo_small, tmp_path / "a", tmp_path / "o", recipe="aws-hrnn", hyperparameters={"epochs": 3})
    instance = dg.DagsterInstance.ephemeral()
    assert run(defs, "demo__full_retrain", instance).success
    version = latest_md(instance, "solution_version")
    assert version["recipe"].value == "aws-hrnn" and version["training/epochs_run"].value == 3
    png = version["loss_curve"].value.split("base64,", 1)[1].rstrip(")")
    assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = latest_md(instance, "solution_metrics")
    assert "base64," in metrics["metrics_by_k"].value
    assert (
        metrics["normalized_discounted_cumulative_gain_at_10"].value
        > metrics["baseline/normalized_discounted_cumulative_gain_at_10"].value
    )
