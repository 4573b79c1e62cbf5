"""Offline metrics of the solution version, with the popularity baseline on the same split,
the lift over it, a per-segment breakdown and the comparison with the previous version."""

from collections.abc import Mapping

import dagster as dg

from personalize_pipeline.config import Solution
from personalize_pipeline.features import load_features
from personalize_pipeline.markdown_tables import segments_markdown, table_markdown
from personalize_pipeline.measure import measured
from personalize_pipeline.metrics import (
    COLLAPSE_DROP,
    COLLAPSE_METRIC,
    PROTOCOLS,
    compare_metrics,
    evaluate,
    parse_cutoff,
)
from personalize_pipeline.recipes import get_recipe
from personalize_pipeline.store import load_manifest, previous_metrics, update_manifest

from .metadata import (
    CODE_VERSION,
    ReadsUpstream,
    floats,
    retry_policy,
    run_materialization,
    step_failure_on_bad_input,
)
from .plots import lift_over_popularity, metrics_by_k, segment_recall
from .resources import ArtifactStore
from .upstream import required_upstream


class MetricsConfig(ReadsUpstream):
    protocol: str = "personalize"  # or leave-last-out, or time (train before a cut-off, test after)
    cutoff: str | None = None  # time protocol: epoch seconds or ISO date; default the 90% quantile of event times
    exclude_seen: bool = False
    seed: int = 42


def solution_metrics_asset(solution: Solution) -> dg.AssetsDefinition:
    name = solution.name

    @dg.asset(
        name="solution_metrics",
        key_prefix=[name],
        deps=[dg.AssetKey([name, "solution_version"]), dg.AssetKey([name, "featurized_dataset"])],
        group_name=name,
        code_version=CODE_VERSION,
        retry_policy=retry_policy(),
        kinds={"numpy"},
        description=(
            f"Amazon Personalize's offline metrics of solution {name} (personalize protocol by default; leave-last-out "
            "and a time holdout on request), the popularity baseline on the same split and the lift over it, metrics "
            "by user-history and item-popularity segment, and the change against the previous solution version."
        ),
    )
    def _asset(
        context: dg.AssetExecutionContext, config: MetricsConfig, artifact_store: ArtifactStore
    ) -> dg.MaterializeResult:
        if config.protocol not in PROTOCOLS:
            raise dg.Failure(description=f"protocol must be one of {', '.join(PROTOCOLS)}", allow_retries=False)
        s3 = artifact_store.s3.options()
        with measured() as stage:
            features = load_features(
                required_upstream(context, dg.AssetKey([name, "featurized_dataset"]), s3, config.upstream_paths)
            )
            version_loc = required_upstream(context, dg.AssetKey([name, "solution_version"]), s3, config.upstream_paths)
            manifest = load_manifest(
                version_loc
            )  # the recipe and hyperparameters trained (AutoML / HPO may have chosen them)
            with step_failure_on_bad_input():
                result = evaluate(
                    features,
                    get_recipe(manifest["recipe"]),
                    manifest["hyperparameters"],
                    protocol=config.protocol,
                    exclude_seen=config.exclude_seen,
                    seed=config.seed,
                    cutoff=parse_cutoff(config.cutoff) if config.protocol == "time" else None,
                )
        return _metrics_result(result, manifest, version_loc, artifact_store.solution(name), stage)

    return _asset


def _metrics_result(result, manifest: dict, version_loc, solution_root, stage) -> dg.MaterializeResult:
    baseline, lift = result.baseline or {}, result.lift
    record = result.report()
    previous = previous_metrics(solution_root, manifest["solution_version"], result.protocol)
    if previous is not None:
        comparison = compare_metrics(result.metrics, previous[1]["metrics"])
        record["previous_version"] = {
            "solution_version": previous[0],
            "metrics": previous[1]["metrics"],
            "collapsed": comparison["collapsed"],
        }
    update_manifest(version_loc, metrics=record)
    rows = [
        {"metric": k, "value": v, "popularity": baseline.get(k), "lift": lift[k]} for k, v in result.metrics.items()
    ]
    metadata = {
        **floats(result.metrics),
        **floats(baseline, "baseline/"),
        **floats({k: v for k, v in lift.items() if v is not None}, "lift/"),
        "recipe": result.recipe,
        "protocol": result.protocol,
        "test_users": result.test_users,
        "train_seconds": result.train_seconds,
        **stage.as_dict(),
        "metrics_table": dg.MetadataValue.md(table_markdown(rows)),
        "metrics_by_k": metrics_by_k(result.metrics, baseline, result.recipe),
        "lift_over_popularity": lift_over_popularity(lift),
        "segments": dg.MetadataValue.md(segments_markdown(result.segments or {}, result.baseline_segments or {})),
        "segments_plot": segment_recall(result.segments or {}, result.baseline_segments or {}, result.recipe),
        "solution_version": manifest["solution_version"],
        "solution_version_path": dg.MetadataValue.path(version_loc.url),
    }
    if result.cutoff is not None:
        metadata["cutoff"] = dg.MetadataValue.timestamp(result.cutoff)
    if previous is not None:
        metadata["previous/solution_version"] = previous[0]
        metadata.update(floats(previous[1]["metrics"], "previous/"))
        metadata["previous/comparison"] = dg.MetadataValue.md(table_markdown(comparison["rows"]))
        metadata["previous/collapsed_metrics"] = ", ".join(comparison["collapsed"]) or "none"
    else:
        metadata["previous/solution_version"] = "none"
    return dg.MaterializeResult(metadata=metadata)


def _run_metadata(context: dg.AssetCheckExecutionContext, key: dg.AssetKey) -> Mapping[str, dg.MetadataValue]:
    """The metadata of the solution_metrics materialization of this check's own run."""
    materialization = run_materialization(context, key)
    if materialization is None:
        raise dg.Failure(description=f"{key.to_user_string()} was not materialized in this run", allow_retries=False)
    return materialization.metadata


def _number(metadata: Mapping[str, dg.MetadataValue], name: str) -> float:
    """A metric that solution_metrics recorded (a float, see ``floats``)."""
    value = metadata[name].value
    if not isinstance(value, int | float):
        raise dg.Failure(description=f"solution_metrics recorded {name} = {value!r}, not a number", allow_retries=False)
    return float(value)


def metrics_checks(solution: Solution) -> list[dg.AssetChecksDefinition]:
    key = dg.AssetKey([solution.name, "solution_metrics"])

    @dg.asset_check(
        asset=key, name="beats_popularity", description="Warns when the solution does not beat the popularity baseline."
    )
    def beats_popularity(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        md = _run_metadata(context, key)
        value, base = _number(md, COLLAPSE_METRIC), _number(md, f"baseline/{COLLAPSE_METRIC}")
        recipe_is_baseline = abs(value - base) < 1e-12
        return dg.AssetCheckResult(
            passed=bool(value > base or recipe_is_baseline),
            severity=dg.AssetCheckSeverity.WARN,
            description=f"NDCG@10 {value:.4f} vs popularity {base:.4f}"
            + (" (the recipe is the baseline)" if recipe_is_baseline else ""),
            metadata={"ndcg_at_10": value, "popularity_ndcg_at_10": base},
        )

    @dg.asset_check(
        asset=key,
        name="no_collapse_against_previous_version",
        description=(
            f"Fails when NDCG@10 drops by more than {COLLAPSE_DROP:.0%} against the previous solution version (same "
            "protocol)."
        ),
    )
    def no_collapse_against_previous_version(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        md = _run_metadata(context, key)
        previous_id = str(md["previous/solution_version"].value)
        value = _number(md, COLLAPSE_METRIC)
        if previous_id == "none":
            return dg.AssetCheckResult(
                passed=True,
                description="first solution version with these metrics: nothing to compare",
                metadata={"ndcg_at_10": value},
            )
        old = _number(md, f"previous/{COLLAPSE_METRIC}")
        change = (value / old - 1.0) if old else 0.0
        passed = not (old and change < -COLLAPSE_DROP)
        return dg.AssetCheckResult(
            passed=bool(passed),
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"NDCG@10 {value:.4f} vs {old:.4f} in {previous_id} ({100 * change:+.1f}%)",
            metadata={
                "ndcg_at_10": value,
                "previous_ndcg_at_10": old,
                "change": change,
                "previous_version": previous_id,
            },
        )

    return [beats_popularity, no_collapse_against_previous_version]
