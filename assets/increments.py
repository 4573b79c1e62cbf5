"""What an UPDATE of one solution imports: the dataset files that are new since its latest
version (INCREMENTAL imports), snapshotted for the UPDATE step, with a blocking Great
Expectations check on the new files alone. The UPDATE job reads nothing else of the
dataset: its cost follows the new data, not the history."""

import dagster as dg

from personalize_pipeline.config import Solution
from personalize_pipeline.increments import load_increment, read_increment, save_increment, validate_increment
from personalize_pipeline.measure import measured

from .checks import validation_result
from .metadata import CODE_VERSION, retry_policy, step_failure_on_bad_input
from .resources import ArtifactStore, DatasetSource
from .upstream import required_upstream


def increment_key(solution: Solution) -> dg.AssetKey:
    return dg.AssetKey([solution.name, "dataset_increment"])


def dataset_increment_asset(solution: Solution) -> dg.AssetsDefinition:
    @dg.asset(
        name="dataset_increment",
        key_prefix=[solution.name],
        deps=["raw_interactions", "raw_items", "raw_users"],
        group_name=solution.name,
        code_version=CODE_VERSION,
        retry_policy=retry_policy(),
        kinds={"pandas", "parquet"},
        description=(
            f"The dataset files new since the latest version of {solution.name} (INCREMENTAL imports: interactions "
            "append, items and users upsert by id); re-delivered files are skipped, a changed or removed file "
            "asks for a FULL retrain."
        ),
    )
    def _asset(
        context: dg.AssetExecutionContext, dataset_source: DatasetSource, artifact_store: ArtifactStore
    ) -> dg.MaterializeResult:
        with measured() as stage:
            with step_failure_on_bad_input():
                increment, _base = read_increment(
                    dataset_source.root(), artifact_store.solution(solution.name), validate_files=False
                )
                location = save_increment(
                    increment, artifact_store.root().child("increments", solution.name, context.run.run_id)
                )
        for note in increment.notes:
            context.log.warning(note)
        group = increment.group
        rows = {
            t: d.num_rows
            for t in ("interactions", "items", "users")
            if group is not None and (d := group.get(t)) is not None
        }
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(location.url),
                "base_version": increment.base_version,
                "new_files": dg.MetadataValue.json(increment.plan.new_files),
                "redelivered_files": dg.MetadataValue.json([p for p, _ in increment.plan.redelivered]),
                **{f"new_rows/{t}": n for t, n in rows.items()},
                **stage.as_dict(),
            }
        )

    return _asset


def increment_check(solution: Solution):
    @dg.asset_check(
        asset=increment_key(solution),
        name="great_expectations_suite",
        blocking=True,
        description=(
            "Great Expectations suite on each new file (schema of the data already imported, types, ids, TIMESTAMP)."
        ),
    )
    def _check(context: dg.AssetCheckExecutionContext, artifact_store: ArtifactStore) -> dg.AssetCheckResult:
        location = required_upstream(context, increment_key(solution), artifact_store.s3.options())
        with measured() as stage:
            report = validate_increment(load_increment(location))
        return validation_result(report, stage)

    return _check
