"""Jobs. Per solution S: ``S__full_retrain`` (weekly, with metrics), ``S__update`` (two-hourly,
no new metrics); shared: ``validate_dataset`` (what the file sensor starts before any
solution has a FULL version).

S's FULL and UPDATE carry the tag ``personalize/solution=S``; dagster.yaml limits runs per
value of that tag to one, so a FULL and an UPDATE of the same solution never run at once,
nor two FULLs, while different solutions run side by side. Each job carries
``dagster/max_runtime`` (personalize.yaml ``runs:``): the run monitor of the Dagster daemon
stops a run that takes longer. The jobs' default run config is the solution's
``batch_inference`` section, so a launchpad run shows what the schedules run."""

from __future__ import annotations

from typing import Any

import dagster as dg

from personalize_pipeline.config import Runs, Solution

from .datasets import VALIDATED_KEYS
from .inference import scheduled_batch_config

SOLUTION_TAG = "personalize/solution"
VALIDATION = dg.AssetSelection.assets(*VALIDATED_KEYS)


def _tags(runs: Runs, job: str, solution: str | None = None, mode: str | None = None) -> dict[str, str]:
    tags = {"dagster/max_runtime": str(getattr(runs.max_runtime_seconds, job))}
    if solution:
        tags.update({SOLUTION_TAG: solution, "personalize/training_mode": mode or ""})
    return tags


def run_config(solution: Solution, mode: str) -> dict[str, Any]:
    """The run config of a FULL or UPDATE run of ``solution`` (training mode and its
    scheduled batch inference), as the schedules and sensors send it."""
    return {
        "ops": {
            f"{solution.name}__solution_version": {"config": {"training_mode": mode}},
            f"{solution.name}__batch_inference_output": {"config": scheduled_batch_config(solution)},
        }
    }


def solution_selection(solution: Solution, *names: str) -> dg.AssetSelection:
    return dg.AssetSelection.assets(*[dg.AssetKey([solution.name, n]) for n in names])


def solution_jobs(solution: Solution, runs: Runs) -> tuple[Any, Any]:
    """(FULL, UPDATE) jobs of one solution."""
    name = solution.name
    pipeline = ("featurized_dataset", "solution_version", "batch_inference_output")
    full = dg.define_asset_job(
        f"{name}__full_retrain",
        selection=VALIDATION | solution_selection(solution, *pipeline, "solution_metrics"),
        description=f"Validate → featurize → FULL training of {name} → metrics → batch inference.",
        config=run_config(solution, "FULL"),
        tags=_tags(runs, "full_retrain", name, "FULL"),
    )
    update = dg.define_asset_job(
        f"{name}__update",
        selection=solution_selection(solution, "dataset_increment", "solution_version", "batch_inference_output"),
        description=(
            f"Import the files new since the latest version of {name} (validated on their own) → UPDATE → "
            "batch inference (no new metrics); the rest of the dataset is not read again."
        ),
        config=run_config(solution, "UPDATE"),
        tags=_tags(runs, "update", name, "UPDATE"),
    )
    return full, update


def validate_dataset_job(runs: Runs):
    return dg.define_asset_job(
        "validate_dataset",
        selection=VALIDATION,
        description="Snapshot the dataset files and run the blocking Great Expectations checks only.",
        tags=_tags(runs, "validate_dataset"),
    )
