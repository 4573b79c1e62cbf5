"""Batch inference output of a solution: Personalize JSONL ``.out`` files, locally or on S3,
for the job input its run config names (``batch_inference`` in personalize.yaml)."""

from typing import Any

import dagster as dg

from personalize_pipeline.batch import BatchResult, run_batch_job
from personalize_pipeline.config import Solution
from personalize_pipeline.job_inputs import job_input_files, write_default_input
from personalize_pipeline.locations import Location
from personalize_pipeline.measure import Measurement, measured
from personalize_pipeline.outputs import LATEST, write_latest
from personalize_pipeline.store import SolutionVersion, load_solution_version

from .metadata import CODE_VERSION, ReadsUpstream, retry_policy, step_failure_on_bad_input
from .resources import ArtifactStore, OutputLocation
from .upstream import required_upstream


class BatchJobOptions(dg.Config):
    """Options of a batch inference job (Personalize's numResults, filter and
    itemExplorationConfig), shared by the pipeline's job and the per-shard jobs."""

    num_results: int = 25
    filter_expression: str | None = None
    filter_values: dict[str, str] = {}
    exploration_weight: float | None = None
    exploration_item_age_cut_off: float | None = None

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


class BatchInferenceConfig(BatchJobOptions, ReadsUpstream):
    # JSONL file, or folder / s3:// prefix (each *.jsonl its own .out); empty: every user / item / segment
    # query the solution version knows, written next to the .out (so the version is never modified)
    input: str = ""


def scheduled_batch_config(solution: Solution) -> dict[str, Any]:
    """The op config of a solution's batch_inference_output in its scheduled runs, from
    ``batch_inference`` in personalize.yaml; exploration only for recipes that explore."""
    spec = solution.batch_inference
    config: dict[str, Any] = {
        "input": spec.input,
        "num_results": spec.num_results,
        "filter_values": dict(spec.filter_values),
    }
    if spec.filter:
        config["filter_expression"] = spec.filter
    if solution.supports_exploration():
        config["exploration_weight"] = spec.exploration_weight
        config["exploration_item_age_cut_off"] = spec.exploration_item_age_cut_off
    return config


def latest_version(
    context, artifact_store: ArtifactStore, solution: str, upstream_paths: dict[str, str]
) -> SolutionVersion:
    """The solution version this run trained; else the one the run config names; else the
    latest complete version in the solution store's index."""
    key = dg.AssetKey([solution, "solution_version"])
    location = required_upstream(
        context, key, artifact_store.s3.options(), upstream_paths, fallback=lambda: artifact_store.solution(solution)
    )
    with step_failure_on_bad_input():
        return load_solution_version(location)


def batch_metadata(result: BatchResult, version: SolutionVersion, stage: Measurement | None = None) -> dict:
    """What a finished batch job shows in the UI (``stage``: the whole step's seconds and
    peak memory; the job's own seconds otherwise)."""
    return {
        "path": dg.MetadataValue.path(result.output),
        "solution_version": version.version_id,
        "lines": result.lines,
        "error_lines": result.errors,
        "unknown_users": result.unknown_users,
        "users_per_second": result.users_per_second,  # net of the job's start-up
        "seconds": result.seconds,
        "job_seconds": result.seconds,
        "startup_seconds": result.startup_seconds,
        **(stage.as_dict() if stage is not None else {}),
    }


def batch_inference_output_asset(solution: Solution) -> dg.AssetsDefinition:
    name = solution.name

    @dg.asset(
        name="batch_inference_output",
        key_prefix=[name],
        deps=[dg.AssetKey([name, "solution_version"])],
        group_name=name,
        code_version=CODE_VERSION,
        retry_policy=retry_policy(),
        kinds={"s3", "json"},
        description=(
            f"Batch recommendations of solution {name} for the job input(s), as Amazon Personalize writes them "
            f"(<input>.out), under <output>/{name}/<solution version>/<run id>/; <output>/{name}/latest.json names "
            "the newest."
        ),
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: BatchInferenceConfig,
        artifact_store: ArtifactStore,
        output_location: OutputLocation,
    ) -> dg.MaterializeResult:
        s3 = output_location.s3.options()
        with measured() as stage:
            version = latest_version(context, artifact_store, name, config.upstream_paths)
            out_dir = output_location.job_output(name, version.version_id, context.run.run_id)
            with step_failure_on_bad_input():
                if config.input:
                    inputs = job_input_files(Location(config.input, s3))
                else:
                    inputs = [write_default_input(version, out_dir)]
                results = []
                for job_input in inputs:
                    results.append(config.run(version, job_input, out_dir))
                    context.log.info(f"batch output: {results[-1].output} ({results[-1].lines} lines)")
                # the pointer moves only once every output is complete (each written to a temporary name, then moved)
                output = results[0].output if len(results) == 1 else out_dir.url
                write_latest(
                    output_location.root(),
                    name,
                    version.version_id,
                    context.run.run_id,
                    output,
                    outputs=[r.output for r in results],
                    lines=sum(r.lines for r in results),
                )
        return dg.MaterializeResult(
            metadata=_outputs_metadata(
                results, version, stage, output, output_location.root().child(name, LATEST).url, s3
            )
        )

    return _asset


def _outputs_metadata(
    results: list[BatchResult], version: SolutionVersion, stage: Measurement, output: str, latest: str, s3
) -> dict:
    preview = Location(results[0].output, s3).read_text().splitlines()[:3]
    metadata = batch_metadata(results[0], version, stage)
    if len(results) > 1:
        total = sum(r.lines for r in results)
        seconds = sum(r.seconds for r in results)
        net = sum(r.seconds - r.startup_seconds for r in results)
        metadata.update(
            {
                "path": dg.MetadataValue.path(output),
                "outputs": dg.MetadataValue.json([r.output for r in results]),
                "lines": total,
                "error_lines": sum(r.errors for r in results),
                "unknown_users": sum(r.unknown_users for r in results),
                "users_per_second": round(sum(r.users_scored for r in results) / max(net, 1e-9), 1),
                "job_seconds": round(seconds, 4),
                "startup_seconds": round(seconds - net, 4),
            }
        )
    return {
        **metadata,
        "input_files": len(results),
        "latest_pointer": dg.MetadataValue.path(latest),
        "preview": dg.MetadataValue.md("```\n" + "\n".join(preview) + "\n```"),
    }
