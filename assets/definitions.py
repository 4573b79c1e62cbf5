"""The one Definitions object of the code location."""

from __future__ import annotations

import os

import dagster as dg

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from .batch_jobs import batch_job_output, batch_job_shards, batch_jobs  # noqa: E402
from .checks import ge_checks  # noqa: E402
from .datasets import raw_assets, validated_assets  # noqa: E402
from .evaluation import beats_popularity, no_collapse_against_previous_version, solution_metrics  # noqa: E402
from .executors import build_executor  # noqa: E402
from .features import featurized_dataset  # noqa: E402
from .inference import batch_inference_output  # noqa: E402
from .jobs import full_retrain, update, validate_dataset  # noqa: E402
from .resources import ArtifactStore, BatchInputs, DatasetSource, OutputLocation, S3Settings, SolutionResource  # noqa: E402
from .schedules import two_hourly_update, weekly_full_retrain  # noqa: E402
from .sensors import new_dataset_files, record_run_failures  # noqa: E402
from .settings import settings  # noqa: E402
from .simulation import exploration_simulation, exploration_simulation_job  # noqa: E402


def build_resources(config: dict | None = None) -> dict:
    config = config or settings()
    s3 = S3Settings.from_env()
    sol = config["solution"]
    return {
        "dataset_source": DatasetSource(location=config["locations"]["dataset"], s3=s3),
        "artifact_store": ArtifactStore(location=config["locations"]["artifacts"], s3=s3),
        "output_location": OutputLocation(location=config["locations"]["output"], s3=s3),
        "batch_inputs": BatchInputs(location=config["locations"].get("batch_input") or config["locations"]["output"] + "/batch-input", s3=s3),
        "solution": SolutionResource(
            name=sol["name"],
            recipe=sol["recipe"],
            hyperparameters={k: str(v) for k, v in (sol.get("hyperparameters") or {}).items()},
            event_type=sol.get("event_type"),
            event_value_threshold=sol.get("event_value_threshold"),
            keep_full_versions=int(sol.get("keep_full_versions") or 5),
            perform_hpo=bool(sol.get("perform_hpo", False)),
            hpo_config=sol.get("hpo_config") or {},
            perform_automl=bool(sol.get("perform_automl", False)),
            automl_config=sol.get("automl_config") or {},
        ),
    }


pipeline_assets = [*validated_assets, featurized_dataset, solution_metrics, batch_inference_output]
from .training import solution_version  # noqa: E402

pipeline_assets.insert(len(validated_assets) + 1, solution_version)

defs = dg.Definitions(
    assets=[*raw_assets, *pipeline_assets, batch_job_output, exploration_simulation],
    asset_checks=[*ge_checks, beats_popularity, no_collapse_against_previous_version],
    jobs=[full_retrain, update, validate_dataset, batch_jobs, exploration_simulation_job],
    schedules=[weekly_full_retrain, two_hourly_update],
    sensors=[new_dataset_files, record_run_failures, batch_job_shards],
    resources=build_resources(),
    executor=build_executor(),
)
