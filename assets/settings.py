"""Reads personalize.yaml (or $PERSONALIZE_CONFIG) once, with environment overrides."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from personalize_pipeline.errors import InputError

DEFAULTS: dict[str, Any] = {
    "locations": {"dataset": ".data/demo", "artifacts": ".data/artifacts", "output": ".data/output", "batch_input": ".data/batch-input"},
    "solution": {
        "name": "demo",
        "recipe": "aws-popularity-count",
        "hyperparameters": {},
        "event_type": None,
        "event_value_threshold": None,
        "keep_full_versions": 5,
    },
    "batch_inference": {"input": "", "num_results": 25},
    "schedules": {
        "full_retrain": {"cron": "0 3 * * 0", "timezone": "UTC"},
        "update": {"cron": "0 */2 * * *", "timezone": "UTC"},
    },
    "sensors": {"new_dataset_files": {"minimum_interval_seconds": 300}},
    "runs": {
        "max_runtime_seconds": {"full_retrain": 6 * 3600, "update": 3600, "validate_dataset": 1800},
        "retries": {"max_retries": 3, "delay_seconds": 5},
        "executor": {"kind": "multiprocess", "config": {}},
    },
}
ENV_LOCATIONS = {
    "dataset": "PERSONALIZE_DATASET",
    "artifacts": "PERSONALIZE_ARTIFACTS",
    "output": "PERSONALIZE_OUTPUT",
    "batch_input": "PERSONALIZE_BATCH_INPUT",
}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in (override or {}).items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


@lru_cache(maxsize=1)
def settings() -> dict[str, Any]:
    path = Path(os.environ.get("PERSONALIZE_CONFIG", "personalize.yaml"))
    if os.environ.get("PERSONALIZE_CONFIG") and not path.is_file():
        # not the defaults' local folders: on a worker that would silently put artifacts on its own disk
        raise InputError(f"PERSONALIZE_CONFIG={path}: no such file (working directory {Path.cwd()}); give an absolute path")
    loaded = yaml.safe_load(path.read_text()) if path.exists() else {}
    config = _merge(DEFAULTS, loaded or {})
    for key, env in ENV_LOCATIONS.items():
        if os.environ.get(env):
            config["locations"][key] = os.environ[env]
    for key, value in config["locations"].items():
        if not str(value).startswith("s3://"):
            config["locations"][key] = str(Path(value).expanduser().resolve())
    return config
