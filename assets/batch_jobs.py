"""Batch inference jobs over input shards, per solution: one dynamic partition per JSONL
file, so a big job split into shards runs as parallel runs (or one backfill) on whatever
executor and run launcher the instance has.

Solution S's shards are the ``*.jsonl`` files under ``<batch input>/S/`` (and, when S is the
only solution, also those directly under ``<batch input>/``; a file of the same name under
``S/`` wins). The ``S__batch_job_shards`` sensor adds a partition for every new or changed
shard and requests a run for it with S's batch_inference options; each partition writes
``<output>/S/<solution version>/jobs/<shard>.out`` with Personalize's format."""

from dataclasses import dataclass
from typing import Any

import dagster as dg

from personalize_pipeline.config import Solution
from personalize_pipeline.errors import InputError
from personalize_pipeline.locations import Location
from personalize_pipeline.measure import measured

from .inference import BatchJobOptions, batch_metadata, latest_version, scheduled_batch_config
from .metadata import CODE_VERSION, ReadsUpstream, retry_policy, step_failure_on_bad_input
from .resources import ArtifactStore, BatchInputs, OutputLocation


class BatchShardConfig(BatchJobOptions, ReadsUpstream):
    """Options of one shard's job; the solution version is the latest complete one in the
    solution store unless ``upstream_paths`` names another."""


def shard_files(batch_inputs: BatchInputs, solution: str, only_solution: bool) -> dict[str, str]:
    """{shard file name: signature} of ``solution``'s ``*.jsonl`` shards."""
    found: dict[str, str] = {}
    for folder in _shard_folders(batch_inputs.root(), solution, only_solution):
        if folder.exists():
            for name in folder.listdir():
                if name.endswith(".jsonl") and name not in found and not folder.child(name).is_dir():
                    found[name] = folder.child(name).signature()
    return dict(sorted(found.items()))


def _shard_folders(root: Location, solution: str, only_solution: bool) -> list[Location]:
    return [root.child(solution), root] if only_solution else [root.child(solution)]


def shard_location(batch_inputs: BatchInputs, solution: str, only_solution: bool, shard: str) -> Location:
    folders = _shard_folders(batch_inputs.root(), solution, only_solution)
    for folder in folders:
        if folder.child(shard).exists():
            return folder.child(shard)
    return folders[0].child(shard)  # run_batch_job reports it missing


@dataclass
class ShardDefinitions:
    asset: dg.AssetsDefinition
    job: Any  # an asset job (resolved by Definitions)
    sensor: dg.SensorDefinition
    partitions: dg.DynamicPartitionsDefinition


def shard_definitions(solution: Solution, only_solution: bool) -> ShardDefinitions:
    name = solution.name
    partitions_name = f"{name}__batch_input_shards"
    partitions = dg.DynamicPartitionsDefinition(name=partitions_name)

    @dg.asset(
        name="batch_job_output",
        key_prefix=[name],
        partitions_def=partitions,
        deps=[dg.AssetKey([name, "solution_version"])],
        group_name=name,
        code_version=CODE_VERSION,
        retry_policy=retry_policy(),
        kinds={"s3", "json"},
        description=(
            f"One batch inference job of solution {name} per input shard (<batch input>/{name}/<shard>.jsonl → "
            f"<output>/{name}/<version>/jobs/<shard>.out)."
        ),
    )
    def batch_job_output(
        context: dg.AssetExecutionContext,
        config: BatchShardConfig,
        batch_inputs: BatchInputs,
        artifact_store: ArtifactStore,
        output_location: OutputLocation,
    ) -> dg.MaterializeResult:
        shard = context.partition_key
        with measured() as stage:
            version = latest_version(context, artifact_store, name, config.upstream_paths)
            out_dir = output_location.root().child(name, version.version_id, "jobs")
            with step_failure_on_bad_input():
                result = config.run(version, shard_location(batch_inputs, name, only_solution, shard), out_dir)
        context.log.info(f"shard {shard}: {result.lines} lines → {result.output}")
        return dg.MaterializeResult(metadata=batch_metadata(result, version, stage))

    options = {k: v for k, v in scheduled_batch_config(solution).items() if k != "input"}
    run_config = {"ops": {f"{name}__batch_job_output": {"config": options}}}
    job = dg.define_asset_job(
        f"{name}__batch_jobs",
        selection=dg.AssetSelection.assets(batch_job_output),  # partitioned like the asset
        config=run_config,
        description=(
            f"Batch inference of solution {name} for one input shard (a partition); the sensor starts one run per "
            "new shard."
        ),
    )

    @dg.sensor(
        name=f"{name}__batch_job_shards",
        job=job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Adds a partition per new or changed *.jsonl shard under <batch input>/{name}/ and runs it once.",
    )
    def batch_job_shards(context: dg.SensorEvaluationContext, batch_inputs: BatchInputs):
        seen = dg.deserialize_value(context.cursor, dict) if context.cursor else {}
        try:
            current = shard_files(batch_inputs, name, only_solution)
        except InputError as exc:
            return dg.SkipReason(f"cannot list {batch_inputs.location}: {exc.message}")
        new = [shard for shard, signature in current.items() if seen.get(shard) != signature]
        if not new:
            return dg.SkipReason(f"no new or changed *.jsonl shards for {name} in {batch_inputs.location}")
        known = set(context.instance.get_dynamic_partitions(partitions_name))
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(partition_key=s, run_key=f"{s}:{current[s]}", run_config=run_config) for s in new
            ],
            dynamic_partitions_requests=[partitions.build_add_request([s for s in new if s not in known])],
            cursor=dg.serialize_value(current),
        )

    return ShardDefinitions(batch_job_output, job, batch_job_shards, partitions)
