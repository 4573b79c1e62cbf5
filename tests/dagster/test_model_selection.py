"""The Dagster view of model selection and metrics: HPO trials as a plot and metadata on
solution_version, lift / segments / long tail plots, the comparison with the previous
solution version, and the check that FAILS when a metric collapses against it."""

import base64

import dagster as dg
import pytest
from pipeline_resources import pipeline_defs

from personalize_pipeline.store import load_manifest


def resources_for(demo, tmp_path, **solution):
    return pipeline_defs(demo, tmp_path / "a", tmp_path / "o", **solution)


def materialize(defs, instance):
    """validated_* → demo's featurized dataset → solution version → metrics, with every check."""
    return dg.materialize(
        [*defs.assets, *defs.asset_checks],
        resources=defs.resources,
        selection=dg.AssetSelection.groups("dataset_group")
        | dg.AssetSelection.assets(
            *[["demo", n] for n in ("featurized_dataset", "solution_version", "solution_metrics")]
        ),
        instance=instance,
        raise_on_error=False,
    )


def latest_md(instance, key):
    return instance.get_latest_materialization_event(dg.AssetKey(["demo", key])).asset_materialization.metadata


def is_png(markdown_value) -> bool:
    return base64.b64decode(markdown_value.value.split("base64,", 1)[1].rstrip(")"))[:8] == b"\x89PNG\r\n\x1a\n"


def test_hpo_run_then_a_collapsed_version_fails_the_check(demo_small, tmp_path, one_torch_thread):
    instance = dg.DagsterInstance.ephemeral()
    hpo = {
        "hpoResourceConfig": {"maxNumberOfTrainingJobs": "3"},
        "hpoObjective": {"type": "Maximize", "metricName": "precision_at_25"},
    }
    result = materialize(
        resources_for(demo_small, tmp_path, recipe="aws-sims", perform_hpo=True, hpo_config=hpo), instance
    )
    assert result.success
    checks = {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == "demo/solution_metrics"
    }
    assert checks == {"beats_popularity": True, "no_collapse_against_previous_version": True}

    version = latest_md(instance, "solution_version")
    assert is_png(version["hpo/trials_plot"]) and "| trial |" in version["hpo/trials"].value
    assert version["hpo/best_value"].value >= version["hpo/default_value"].value
    assert version["hpo/objective"].value == "precision_at_25"
    assert is_png(latest_md(instance, "featurized_dataset")["popularity_long_tail"])
    metrics = latest_md(instance, "solution_metrics")
    assert metrics["recipe"].value == "aws-sims" and metrics["previous/solution_version"].value == "none"
    assert is_png(metrics["lift_over_popularity"]) and is_png(metrics["segments_plot"])
    assert "items by popularity" in metrics["segments"].value and "head" in metrics["segments"].value
    lift = metrics["lift/precision_at_25"].value
    assert lift == pytest.approx(metrics["precision_at_25"].value / metrics["baseline/precision_at_25"].value - 1)
    first_version = version["solution_version"].value
    manifest = load_manifest(version["path"].value)
    assert manifest["hpo"]["trials"] and manifest["metrics"]["baseline_popularity"] and manifest["metrics"]["segments"]

    # a broken model (one epoch at a useless learning rate; no repeat mixing, which alone
    # ranks the demo users' own items well) as the next version of the same solution
    broken = {
        "epochs": "1",
        "learning_rate": "0.00001",
        "hidden_dimension": "32",
        "n_sample": "64",
        "repeat_aware": "false",
    }
    result = materialize(resources_for(demo_small, tmp_path, recipe="aws-hrnn", hyperparameters=broken), instance)
    evaluations = {
        e.check_name: e
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == "demo/solution_metrics"
    }
    collapse = evaluations["no_collapse_against_previous_version"]
    assert not collapse.passed and collapse.severity == dg.AssetCheckSeverity.ERROR
    assert first_version in collapse.description
    metrics = latest_md(instance, "solution_metrics")
    assert metrics["previous/solution_version"].value == first_version
    assert "normalized_discounted_cumulative_gain_at_10" in metrics["previous/collapsed_metrics"].value
    assert "| metric | new | previous | change |" in metrics["previous/comparison"].value
