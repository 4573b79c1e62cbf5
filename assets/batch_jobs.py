"""Batch inference jobs over input shards: one dynamic partition per JSONL file under the
batch input location, so a big job split into shards runs as parallel runs (or one
backfill) on whatever executor and run launcher the instance has.

The ``batch_job_shards`` sensor adds a partition for every new or changed ``*.jsonl``
file and requests a run for it; each partition writes
``<output>/<solution>/<solution version>/jobs/<shard>.out`` with Personalize's format."""

import dagster as dg

from personalize_pipeline.errors import InputError
from personalize_pipeline.measure import measured
from personalize_pipeline.store import load_solution_version

from .inference import BatchJobOptions, batch_metadata
from .metadata import CODE_VERSION, location_of, retry_policy, step_failure_on_bad_input
from .resources import ArtifactStore, BatchInputs, OutputLocation, SolutionResource

batch_input_shards = dg.DynamicPartitionsDefinition(name="batch_input_shards")


@dg.asset(
    partitions_def=batch_input_shards,
    deps=["solution_version"],
    group_name="batch_jobs",
    code_version=CODE_VERSION,
    retry_policy=retry_policy(),
    kinds={"s3", "json"},
    description="One batch inference job per input shard (<batch input>/<shard>.jsonl → <output>/<solution>/<version>/jobs/<shard>.out).",
)
def batch_job_output(
    context: dg.AssetExecutionContext,
    config: BatchJobOptions,
    batch_inputs: BatchInputs,
    artifact_store: ArtifactStore,
    output_location: OutputLocation,
    solution: SolutionResource,
) -> dg.MaterializeResult:
    shard = context.partition_key
    with measured() as stage:
        version = load_solution_version(location_of(context, "solution_version", artifact_store.s3.options()))
        out_dir = output_location.root().child(solution.name, version.version_id, "jobs")
        with step_failure_on_bad_input():
            result = config.run(version, batch_inputs.root().child(shard), out_dir)
    context.log.info(f"shard {shard}: {result.lines} lines → {result.output}")
    return dg.MaterializeResult(metadata=batch_metadata(result, version, stage))


batch_jobs = dg.define_asset_job(
    "batch_jobs",
    selection=dg.AssetSelection.assets(batch_job_output),
    partitions_def=batch_input_shards,
    description="Batch inference for one input shard (a partition); the sensor starts one run per new shard.",
)


def shard_files(batch_inputs: BatchInputs) -> dict[str, str]:
    """{file name: signature} of the ``*.jsonl`` shards under the batch input location."""
    root = batch_inputs.root()
    if not root.exists():
        return {}
    names = sorted(n for n in root.listdir() if n.endswith(".jsonl"))
    return {n: root.child(n).signature() for n in names}


@dg.sensor(
    name="batch_job_shards",
    job=batch_jobs,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Adds a partition per new or changed *.jsonl shard under the batch input location and runs it once.",
)
def batch_job_shards(context: dg.SensorEvaluationContext, batch_inputs: BatchInputs):
    seen = dict(dg.deserialize_value(context.cursor)) if context.cursor else {}
    try:
        current = shard_files(batch_inputs)
    except InputError as exc:
        return dg.SkipReason(f"cannot list {batch_inputs.location}: {exc.message}")
    new = [name for name, signature in current.items() if seen.get(name) != signature]
    if not new:
        return dg.SkipReason(f"no new or changed *.jsonl shards in {batch_inputs.location}")
    known = set(context.instance.get_dynamic_partitions(batch_input_shards.name))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=name, run_key=f"{name}:{current[name]}") for name in new],
        dynamic_partitions_requests=[batch_input_shards.build_add_request([n for n in new if n not in known])],
        cursor=dg.serialize_value(current),
    )
