"""Reads personalize.yaml (or $PERSONALIZE_CONFIG) once into the typed model of
``personalize_pipeline.config`` (every default is there), with environment overrides. A bad
file stops the code location from loading with one line naming the key and the file."""

from __future__ import annotations

from functools import lru_cache

from personalize_pipeline.config import PipelineConfig, load_config


@lru_cache(maxsize=1)
def settings() -> PipelineConfig:
    return load_config()
