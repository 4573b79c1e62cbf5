"""The one Definitions object of the code location: the shared datasets (with the
metric_attribution asset and its attribute_metrics job, and the delete_users job), then each
configured solution's assets, checks, jobs, schedules and sensors (assets/solutions.py),
from personalize.yaml (or $PERSONALIZE_CONFIG). A bad configuration stops the load with one
line naming the key and the file."""

from __future__ import annotations

import dagster as dg

from personalize_pipeline.config import PipelineConfig

from .attribution import metric_attribution, metric_attribution_job
from .checks import ge_checks
from .datasets import raw_assets, validated_assets
from .deletion import delete_users_job
from .executors import build_executor
from .jobs import validate_dataset_job
from .resources import ArtifactStore, BatchInputs, DatasetSource, OutputLocation, S3Settings
from .sensors import new_dataset_files_sensor, record_run_failures
from .settings import settings
from .simulation import exploration_simulation, exploration_simulation_job
from .solutions import SolutionDefinitions, solution_definitions


def build_resources(config: PipelineConfig, s3: S3Settings | None = None) -> dict:
    s3 = s3 or S3Settings.from_env()
    where = config.locations
    return {
        "dataset_source": DatasetSource(location=where.dataset, s3=s3),
        "artifact_store": ArtifactStore(location=where.artifacts, s3=s3),
        "output_location": OutputLocation(location=where.output, s3=s3),
        "batch_inputs": BatchInputs(location=where.batch_input, s3=s3),
    }


def build_solutions(config: PipelineConfig) -> list[SolutionDefinitions]:
    return [solution_definitions(s, config.runs, only_solution=len(config.solutions) == 1) for s in config.solutions]


def build_definitions(
    config: PipelineConfig, s3: S3Settings | None = None, executor: dg.ExecutorDefinition | None = None
) -> dg.Definitions:
    solutions = build_solutions(config)
    validate_dataset = validate_dataset_job(config.runs)
    shared = dg.Definitions(
        assets=[*raw_assets, *validated_assets, metric_attribution, exploration_simulation],
        asset_checks=ge_checks,
        jobs=[
            validate_dataset,
            metric_attribution_job,
            delete_users_job([s.name for s in solutions]),
            exploration_simulation_job,
        ],
        sensors=[
            new_dataset_files_sensor(config, {s.name: s.update_job for s in solutions}, validate_dataset),
            record_run_failures,
        ],
        resources=build_resources(config, s3),
        executor=executor or build_executor(config.runs.executor),
    )
    return dg.Definitions.merge(shared, *(s.definitions() for s in solutions))


defs = build_definitions(settings())
