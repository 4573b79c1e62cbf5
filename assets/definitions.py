"""The one Definitions object of the code location: the shared datasets (with the
metric_attribution asset and its attribute_metrics job, and the delete_users job), then each
configured solution's assets, checks, jobs, schedules and sensors (assets/solutions.py),
from personalize.yaml (or $PERSONALIZE_CONFIG). A bad configuration stops the load with one
line naming the key and the file."""

from __future__ import annotations

import os

import dagster as dg

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from personalize_pipeline.config import PipelineConfig  # noqa: E402

from .attribution import metric_attribution, metric_attribution_job  # noqa: E402
from .checks import ge_checks  # noqa: E402
from .datasets import raw_assets, validated_assets  # noqa: E402
from .deletion import delete_users_job  # noqa: E402
from .executors import build_executor  # noqa: E402
from .jobs import validate_dataset_job  # noqa: E402
from .resources import ArtifactStore, BatchInputs, DatasetSource, OutputLocation, S3Settings  # noqa: E402
from .sensors import new_dataset_files_sensor, record_run_failures  # noqa: E402
from .settings import settings  # noqa: E402
from .simulation import exploration_simulation, exploration_simulation_job  # noqa: E402
from .solutions import SolutionDefinitions, solution_definitions  # noqa: E402


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
