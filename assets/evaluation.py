"""Offline metrics of the solution version, with the popularity baseline on the same split."""


import dagster as dg

from personalize_pipeline.features import load_features
from personalize_pipeline.metrics import PROTOCOLS, evaluate
from personalize_pipeline.store import update_manifest

from .metadata import CODE_VERSION, floats, location_of, retry_policy, table_markdown
from .plots import metrics_by_k
from .resources import ArtifactStore, SolutionResource


class MetricsConfig(dg.Config):
    protocol: str = "personalize"  # or leave-last-out
    exclude_seen: bool = False
    seed: int = 42


@dg.asset(
    deps=["solution_version", "featurized_dataset"],
    group_name="personalize",
    code_version=CODE_VERSION,
    retry_policy=retry_policy(),
    kinds={"numpy"},
    description="Amazon Personalize's offline metrics (personalize protocol by default) and the popularity baseline.",
)
def solution_metrics(
    context: dg.AssetExecutionContext, config: MetricsConfig, artifact_store: ArtifactStore, solution: SolutionResource
) -> dg.MaterializeResult:
    if config.protocol not in PROTOCOLS:
        raise dg.Failure(description=f"protocol must be one of {', '.join(PROTOCOLS)}", allow_retries=False)
    s3 = artifact_store.s3.options()
    features = load_features(location_of(context, "featurized_dataset", s3))
    version_loc = location_of(context, "solution_version", s3)
    cfg = solution.config()
    result = evaluate(
        features, cfg.recipe_class(), cfg.hyperparameters, protocol=config.protocol, exclude_seen=config.exclude_seen, seed=config.seed
    )
    baseline = result.baseline or {}
    lift = {k: (v / baseline[k] - 1.0) if baseline.get(k) else 0.0 for k, v in result.metrics.items()}
    record = {**result.to_json(), "baseline_popularity": baseline, "lift_over_popularity": lift, "test_users": result.test_users}
    update_manifest(version_loc, metrics=record)
    rows = [{"metric": k, "value": v, "popularity": baseline.get(k), "lift": lift[k]} for k, v in result.metrics.items()]
    return dg.MaterializeResult(
        metadata={
            **floats(result.metrics),
            **floats(baseline, "baseline/"),
            "protocol": result.protocol,
            "test_users": result.test_users,
            "train_seconds": result.train_seconds,
            "metrics_table": dg.MetadataValue.md(table_markdown(rows)),
            "metrics_by_k": metrics_by_k(result.metrics, baseline, result.recipe),
            "solution_version_path": dg.MetadataValue.path(version_loc.url),
        }
    )


@dg.asset_check(asset=solution_metrics, name="beats_popularity", description="Warns when the solution does not beat the popularity baseline.")
def beats_popularity(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    event = context.instance.get_latest_materialization_event(dg.AssetKey("solution_metrics"))
    md = event.asset_materialization.metadata
    key = "normalized_discounted_cumulative_gain_at_10"
    value, base = md[key].value, md[f"baseline/{key}"].value
    recipe_is_baseline = abs(value - base) < 1e-12
    return dg.AssetCheckResult(
        passed=bool(value > base or recipe_is_baseline),
        severity=dg.AssetCheckSeverity.WARN,
        description=f"NDCG@10 {value:.4f} vs popularity {base:.4f}" + (" (the recipe is the baseline)" if recipe_is_baseline else ""),
        metadata={"ndcg_at_10": value, "popularity_ndcg_at_10": base},
    )
