"""A solution's version: FULL retrain or UPDATE from its latest FULL version."""

import dagster as dg

from personalize_pipeline.config import Solution
from personalize_pipeline.features import load_features
from personalize_pipeline.increments import extend_features, load_increment
from personalize_pipeline.markdown_tables import table_markdown
from personalize_pipeline.measure import measured
from personalize_pipeline.store import read_index
from personalize_pipeline.training import train

from .increments import increment_key
from .metadata import (
    CODE_VERSION,
    ReadsUpstream,
    floats,
    retry_policy,
    step_failure_on_bad_input,
)
from .plots import hpo_trials, loss_curve
from .resources import ArtifactStore, training_config
from .upstream import required_upstream


class TrainConfig(ReadsUpstream):
    training_mode: str = "FULL"  # FULL or UPDATE
    seed: int = 42


def solution_version_asset(solution: Solution) -> dg.AssetsDefinition:
    @dg.asset(
        name="solution_version",
        key_prefix=[solution.name],
        deps=[dg.AssetKey([solution.name, "featurized_dataset"]), increment_key(solution)],
        group_name=solution.name,
        code_version=CODE_VERSION,
        retry_policy=retry_policy(),
        kinds={"pytorch", "numpy"},
        pool="personalize_training",
        description=(
            f"A trained version of solution {solution.name} ({solution.recipe}): model, catalogue, histories, "
            f"manifest, in the solution store; the last {solution.keep_full_versions} FULL versions and their "
            "UPDATEs are kept."
        ),
    )
    def _asset(
        context: dg.AssetExecutionContext, config: TrainConfig, artifact_store: ArtifactStore
    ) -> dg.MaterializeResult:
        with measured() as stage:
            root = artifact_store.solution(solution.name)
            with step_failure_on_bad_input():
                features = _training_data(context, config, solution, artifact_store)
                version = train(
                    features,
                    training_config(solution),
                    root,
                    training_mode=config.training_mode,
                    seed=config.seed,
                    solution_name=solution.name,
                    keep_full_versions=solution.keep_full_versions,
                    log=context.log.info,
                )
        return _version_result(context, version, root, stage)

    return _asset


def _training_data(
    context: dg.AssetExecutionContext, config: TrainConfig, solution: Solution, artifact_store: ArtifactStore
):
    """FULL: the featurized dataset of this run. UPDATE: the featurized dataset the latest
    version stored, plus the new files this run's dataset_increment imported."""
    s3 = artifact_store.s3.options()
    if config.training_mode.upper() != "UPDATE":
        return load_features(
            required_upstream(context, dg.AssetKey([solution.name, "featurized_dataset"]), s3, config.upstream_paths)
        )
    increment = load_increment(required_upstream(context, increment_key(solution), s3, config.upstream_paths))
    base = artifact_store.solution(solution.name).child("versions", increment.base_version, "features")
    features = load_features(base)
    if increment.group is None:
        context.log.info(f"no new files since solution version {increment.base_version}")
        return features
    context.log.info(f"UPDATE imports {', '.join(increment.plan.new_files)} on top of {increment.base_version}")
    return extend_features(features, increment.group, training_config(solution).featurize_options())


def _version_result(context: dg.AssetExecutionContext, version, root, stage) -> dg.MaterializeResult:
    m = version.manifest
    losses = m.get("training", {}).get("loss_by_epoch", [])
    plots = {"loss_curve": loss_curve(losses)} if len(losses) > 1 else {}
    plots.update(_selection_metadata(m))
    context.log.info(f"{m['training_mode']} solution version {version.version_id} at {version.location.url}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(version.location.url),
            "solution_version": version.version_id,
            "recipe": m["recipe"],
            "training_mode": m["training_mode"],
            "base_version": m.get("base_version") or "",
            "hyperparameters": dg.MetadataValue.json(m["hyperparameters"]),
            **floats(m["timings"]),
            **stage.as_dict(),
            **floats({k: v for k, v in m.get("training", {}).items() if isinstance(v, (int, float))}, "training/"),
            "loss_by_epoch": dg.MetadataValue.json(m.get("training", {}).get("loss_by_epoch", [])),
            "catalog_items": m["catalog"]["items"],
            "catalog_users": m["catalog"]["users"],
            "versions_kept": len((read_index(root) or {}).get("versions", [])),
            **plots,
        },
        tags={"personalize/training_mode": m["training_mode"]},
    )


def _selection_metadata(m: dict) -> dict:
    """HPO trials (plot, table, best vs defaults) and AutoML candidates, when they ran."""
    out: dict = {}
    automl = m.get("automl")
    if automl:
        metric = automl["config"]["metricName"]
        rows = [
            {
                "recipe": c["recipe"],
                metric: c["value"],
                "seconds": c["seconds"],
                "chosen": c["recipe"] == automl["chosen"],
            }
            for c in automl["candidates"]
        ]
        out["automl/chosen"] = automl["chosen"]
        out["automl/candidates"] = dg.MetadataValue.md(table_markdown(rows))
    hpo = m.get("hpo")
    if hpo and hpo.get("trials"):
        metric = hpo["config"]["hpoObjective"]["metricName"]
        rows = [
            {"trial": t["number"] + 1, metric: t["value"], "seconds": t["seconds"], **t["params"]}
            for t in hpo["trials"]
        ]
        out["hpo/trials_plot"] = hpo_trials(hpo["trials"], metric)
        out["hpo/trials"] = dg.MetadataValue.md(table_markdown(rows))
        out["hpo/best_value"] = dg.MetadataValue.float(float(hpo["best"]["value"]))
        if hpo.get("default_value") is not None:
            out["hpo/default_value"] = dg.MetadataValue.float(float(hpo["default_value"]))
        out["hpo/best_params"] = dg.MetadataValue.json(hpo["best"]["params"])
        out["hpo/objective"] = metric
    return out
