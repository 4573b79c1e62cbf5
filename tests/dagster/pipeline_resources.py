"""Shared by the Dagster tests: the code location built from a configuration with given
locations and solutions (as personalize.yaml would give them)."""

import dagster as dg

from assets.definitions import build_definitions, build_resources
from personalize_pipeline.config import PipelineConfig, parse_config, with_environment


def pipeline_config(dataset, artifacts, output, batch_input=None, solutions=None, **solution) -> PipelineConfig:
    """A configuration with these locations and ``solutions`` (a list of solution sections),
    or one solution named ``demo`` with the ``solution`` fields."""
    locations = {"dataset": str(dataset), "artifacts": str(artifacts), "output": str(output)}
    # never the working directory's .data/batch-input: a test's shards are its own
    locations["batch_input"] = str(batch_input) if batch_input is not None else f"{output}/batch-input"
    raw = {"locations": locations, "solutions": solutions or [{"name": "demo", **solution}]}
    return with_environment(parse_config(raw, "test config"), env={})


def pipeline_resources(dataset, artifacts, output, s3=None, batch_input=None, **solution) -> dict:
    """The code location's resources for these locations (``s3``: an ``S3Settings``)."""
    return build_resources(pipeline_config(dataset, artifacts, output, batch_input, **solution), s3=s3)


def pipeline_defs(dataset, artifacts, output, s3=None, batch_input=None, solutions=None, **solution) -> dg.Definitions:
    """The whole code location (every job, schedule and sensor) for this configuration,
    its steps run in process."""
    config = pipeline_config(dataset, artifacts, output, batch_input, solutions, **solution)
    return build_definitions(config, s3=s3, executor=dg.in_process_executor)


def key(*parts: str) -> dg.AssetKey:
    """``key("demo", "solution_version")``."""
    return dg.AssetKey(list(parts))
