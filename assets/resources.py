"""Dagster resources: where datasets come from, where artifacts and outputs go. Thin
wrappers that hand engine objects to the assets. The solutions are not resources: each
solution's assets close over its configuration (``assets/solutions.py``)."""

import os

import dagster as dg

from personalize_pipeline.config import Solution
from personalize_pipeline.locations import Location, S3Options
from personalize_pipeline.outputs import run_output_location
from personalize_pipeline.training import SolutionConfig


class S3Settings(dg.ConfigurableResource):
    """S3 / MinIO / SeaweedFS access. Unset fields fall back to the standard AWS environment
    variables; set secrets with ``dg.EnvVar`` so they are never shown in the UI."""

    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str | None = None

    def options(self) -> S3Options:
        return S3Options(self.endpoint_url, self.access_key_id, self.secret_access_key, self.region)

    @classmethod
    def from_env(cls) -> "S3Settings":
        def env(name: str):
            return dg.EnvVar(name) if os.environ.get(name) else None

        return cls(
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
            access_key_id=env("AWS_ACCESS_KEY_ID"),
            secret_access_key=env("AWS_SECRET_ACCESS_KEY"),
            region=os.environ.get("AWS_REGION") or None,
        )


class _LocationResource(dg.ConfigurableResource):
    location: str
    s3: S3Settings

    def root(self) -> Location:
        return Location(self.location, self.s3.options())


class DatasetSource(_LocationResource):
    """The dataset group: a folder or s3:// prefix with interactions / items / users files."""


class BatchInputs(_LocationResource):
    """Folder or s3:// prefix whose ``*.jsonl`` files are batch inference job shards."""


class ArtifactStore(_LocationResource):
    """Validated snapshots, featurized datasets and solution versions."""

    def validated(self, dataset_type: str, run_id: str) -> Location:
        return self.root().child("validated", dataset_type, run_id)

    def features(self, solution: str, run_id: str) -> Location:
        return self.root().child("features", solution, run_id)

    def solution(self, solution: str) -> Location:
        return self.root().child("solutions", solution)


class OutputLocation(_LocationResource):
    """Where batch inference writes its ``.out`` files: one folder per solution version and
    run, and ``<solution>/latest.json`` naming the newest (``personalize_pipeline.outputs``)."""

    def job_output(self, solution: str, version_id: str, run_id: str) -> Location:
        return run_output_location(self.root(), solution, version_id, run_id)


def training_config(solution: Solution) -> SolutionConfig:
    """The engine's view of a configured solution: recipe, hyperparameters, event filters,
    and HPO / AutoML (``hpo_config`` and ``automl_config`` in Personalize's shape:
    ``hpoObjective``, ``hpoResourceConfig``, ``algorithmHyperParameterRanges``;
    ``metricName``, ``recipeList``)."""
    return solution.training_config()
