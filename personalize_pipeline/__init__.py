"""personalize-pipeline engine: Amazon Personalize custom recipes, self-hosted.

Plain Python (no Dagster): schemas, dataset I/O, validation, featurization, recipes,
metrics, solution-version storage, batch inference and the CLI.
"""

__version__ = "0.1.0"
