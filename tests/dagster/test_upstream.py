"""Upstream reads are this run's: an asset reads the snapshot its own run materialized (or
the one its run config names), never "the latest materialization anywhere", so a validation
run whose blocking check failed cannot hand its snapshot to a FULL run racing it. (A run that
materializes no validated_* at all: test_solutions.py, on its trained solutions.)"""

import shutil

import dagster as dg
import pandas as pd
from pipeline_resources import pipeline_defs

SELECTION = dg.AssetSelection.groups("dataset_group") | dg.AssetSelection.assets(["demo", "featurized_dataset"])


def break_timestamps(dataset):
    df = pd.read_csv(dataset / "interactions.csv", dtype=str, keep_default_na=False)
    df.loc[10, "TIMESTAMP"] = "not-a-time"
    df.to_csv(dataset / "interactions.csv", index=False)


def latest(instance, asset_key):
    return instance.get_latest_materialization_event(asset_key).asset_materialization


def test_failed_validation_racing_a_full_run_is_never_read(demo_small, tmp_path):
    dataset = tmp_path / "dataset"
    shutil.copytree(demo_small, dataset)
    break_timestamps(dataset)
    defs = pipeline_defs(dataset, tmp_path / "a", tmp_path / "o")
    instance = dg.DagsterInstance.ephemeral()
    failed = defs.resolve_job_def("validate_dataset").execute_in_process(instance=instance, raise_on_error=False)
    assert not failed.success and any(not e.passed for e in failed.get_asset_check_evaluations())
    bad_snapshot = latest(instance, dg.AssetKey("validated_interactions")).metadata["path"].value
    shutil.copy(demo_small / "interactions.csv", dataset / "interactions.csv")  # the data is fixed

    @dg.success_hook
    def racing_validation(context: dg.HookContext):
        """Another validation run finishing between this run's validation and its featurize."""
        if context.op.name == "validated_interactions":
            event = dg.AssetMaterialization(
                "validated_interactions", metadata={"path": dg.MetadataValue.path(bad_snapshot)}
            )
            context.instance.report_runless_asset_event(event)

    raced = dg.define_asset_job("raced_full", selection=SELECTION, hooks={racing_validation})
    defs = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, jobs=[raced], resources=defs.resources)
    result = defs.resolve_job_def("raced_full").execute_in_process(instance=instance, raise_on_error=False)
    assert result.success
    assert (
        latest(instance, dg.AssetKey("validated_interactions")).metadata["path"].value == bad_snapshot
    )  # the race happened
    own = result.asset_materializations_for_node("validated_interactions")[-1].metadata["path"].value
    read = result.asset_materializations_for_node("demo__featurized_dataset")[-1].metadata["snapshots"].value
    assert read["interactions"] == own != bad_snapshot and result.run_id in own
