"""Shared by the Dagster tests: the code location's resources for given locations."""

import json

from assets.definitions import build_resources
from assets.settings import DEFAULTS


def pipeline_resources(dataset, artifacts, output, s3=None, batch_input=None, **solution) -> dict:
    """``build_resources`` over the default settings with these locations (``s3``: an
    ``S3Settings`` for the dataset, artifact and output locations) and ``solution`` fields."""
    config = json.loads(json.dumps(DEFAULTS))
    config["locations"] = {"dataset": str(dataset), "artifacts": str(artifacts), "output": str(output)}
    if batch_input is not None:
        config["locations"]["batch_input"] = str(batch_input)
    config["solution"].update(solution)
    resources = build_resources(config)
    if s3 is not None:
        for key in ("dataset_source", "artifact_store", "output_location"):
            resources[key] = resources[key].model_copy(update={"s3": s3})
    return resources
