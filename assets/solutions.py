"""The asset factory: everything one configured solution owns, under its name.

For solution S (``solutions:`` in personalize.yaml): the assets S/dataset_increment (the
files an UPDATE imports, with a blocking check), S/featurized_dataset,
S/solution_version, S/solution_metrics, S/batch_inference_output and the partitioned
S/batch_job_output (group S, so the UI shows each solution's lineage on its own), the checks
beats_popularity and no_collapse_against_previous_version, the jobs S__full_retrain,
S__update and S__batch_jobs, the schedules S__weekly_full_retrain and S__two_hourly_update,
and the sensor S__batch_job_shards. Each asset closes over S's configuration model: there
is no global "the solution". The raw and validated datasets are shared (datasets.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from personalize_pipeline.config import Runs, Solution

from .batch_jobs import shard_definitions
from .evaluation import metrics_checks, solution_metrics_asset
from .features import featurized_dataset_asset
from .increments import dataset_increment_asset, increment_check
from .inference import batch_inference_output_asset
from .jobs import solution_jobs
from .schedules import solution_schedules
from .training import solution_version_asset


@dataclass
class SolutionDefinitions:
    name: str
    assets: list = field(default_factory=list)
    asset_checks: list = field(default_factory=list)
    jobs: list = field(default_factory=list)
    schedules: list = field(default_factory=list)
    sensors: list = field(default_factory=list)

    @property
    def full_job(self):
        return self.jobs[0]

    @property
    def update_job(self):
        return self.jobs[1]

    def definitions(self) -> dg.Definitions:
        return dg.Definitions(
            assets=self.assets,
            asset_checks=self.asset_checks,
            jobs=self.jobs,
            schedules=self.schedules,
            sensors=self.sensors,
        )


def solution_definitions(solution: Solution, runs: Runs, only_solution: bool) -> SolutionDefinitions:
    """``only_solution``: S is the one configured solution (its batch shards may also lie
    directly under the batch input location)."""
    shards = shard_definitions(solution, only_solution)
    full, update = solution_jobs(solution, runs)
    return SolutionDefinitions(
        name=solution.name,
        assets=[
            dataset_increment_asset(solution),
            featurized_dataset_asset(solution),
            solution_version_asset(solution),
            solution_metrics_asset(solution),
            batch_inference_output_asset(solution),
            shards.asset,
        ],
        asset_checks=[*metrics_checks(solution), increment_check(solution)],
        jobs=[full, update, shards.job],
        schedules=solution_schedules(solution, full, update),
        sensors=[shards.sensor],
    )
