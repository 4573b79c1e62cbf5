"""Batch inference output: Personalize JSONL ``.out`` files, locally or on S3."""


from typing import Optional

import dagster as dg

from personalize_pipeline.batch import BatchResult, run_batch_job, write_all_users_input
from personalize_pipeline.locations import Location
from personalize_pipeline.measure import Measurement, measured
from personalize_pipeline.outputs import LATEST, write_latest
from personalize_pipeline.store import SolutionVersion, load_solution_version

from .metadata import CODE_VERSION, location_of, retry_policy, step_failure_on_bad_input
from .resources import ArtifactStore, OutputLocation, SolutionResource


class BatchJobOptions(dg.Config):
    """Options of a batch inference job (Personalize's numResults, filter and
    itemExplorationConfig), shared by the pipeline's job and the per-shard jobs."""

    num_results: int = 25
    filter_expression: Optional[str] = None
    filter_values: dict[str, str] = {}
    exploration_weight: Optional[float] = None
    exploration_item_age_cut_off: Optional[float] = None

    def run(self, version: SolutionVersion, job_input: Location, out_dir: Location) -> BatchResult:
        return run_batch_job(
            version,
            job_input,
            out_dir,
            num_results=self.num_results,
            filter_expression=self.filter_expression,
            filter_values=dict(self.filter_values) or None,
            exploration_weight=self.exploration_weight,
            exploration_item_age_cut_off=self.exploration_item_age_cut_off,
        )


class BatchInferenceConfig(BatchJobOptions):
    input: str = ""  # JSONL job input (folder path or s3:// key); empty: every known user


def batch_metadata(result: BatchResult, version: SolutionVersion, stage: Optional[Measurement] = None) -> dict:
    """What a finished batch job shows in the UI (``stage``: the whole step's seconds and
    peak memory; the job's own seconds otherwise)."""
    return {
        "path": dg.MetadataValue.path(result.output),
        "solution_version": version.version_id,
        "lines": result.lines,
        "error_lines": result.errors,
        "unknown_users": result.unknown_users,
        "users_per_second": result.users_per_second,
        "seconds": result.seconds,
        "job_seconds": result.seconds,
        **(stage.as_dict() if stage is not None else {}),
    }


@dg.asset(
    deps=["solution_version"],
    group_name="personalize",
    code_version=CODE_VERSION,
    retry_policy=retry_policy(),
    kinds={"s3", "json"},
    description=(
        "Batch recommendations for the job input, as Amazon Personalize writes them (<input>.out), under "
        "<output>/<solution>/<solution version>/<run id>/; <output>/<solution>/latest.json names the newest."
    ),
)
def batch_inference_output(
    context: dg.AssetExecutionContext,
    config: BatchInferenceConfig,
    artifact_store: ArtifactStore,
    output_location: OutputLocation,
    solution: SolutionResource,
) -> dg.MaterializeResult:
    with measured() as stage:
        version = load_solution_version(location_of(context, "solution_version", artifact_store.s3.options()))
        out_dir = output_location.job_output(solution.name, version.version_id, context.run_id)
        with step_failure_on_bad_input():
            if config.input:
                job_input = Location(config.input, output_location.s3.options())
            else:
                # next to its .out, so the finished solution version is never modified
                job_input = write_all_users_input(version, out_dir.child("all-users.jsonl"))
            result = config.run(version, job_input, out_dir)
            # the pointer moves only once the output is complete (written to a temporary name, then moved)
            write_latest(output_location.root(), solution.name, version.version_id, context.run_id, result.output, lines=result.lines)
    preview = Location(result.output, output_location.s3.options()).read_text().splitlines()[:3]
    context.log.info(f"batch output: {result.output}")
    return dg.MaterializeResult(
        metadata={
            **batch_metadata(result, version, stage),
            "latest_pointer": dg.MetadataValue.path(output_location.root().child(solution.name, LATEST).url),
            "preview": dg.MetadataValue.md("```\n" + "\n".join(preview) + "\n```"),
        }
    )
