"""The pipeline configuration (``personalize.yaml``, or the file named by PERSONALIZE_CONFIG)
read into one typed model. Defaults live here and nowhere else; an unknown or misspelt key,
or a value of the wrong type, is one ``InputError`` line naming the key path and the file.

Plain Python (pydantic, no Dagster): the Dagster code location (``assets/``) turns the model
into resources, run config and schedules at its edge."""

from __future__ import annotations

import os
import re
import zoneinfo
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InputError, key_path

CONFIG_ENV = "PERSONALIZE_CONFIG"
DEFAULT_FILE = "personalize.yaml"
ENV_LOCATIONS = {
    "dataset": "PERSONALIZE_DATASET",
    "artifacts": "PERSONALIZE_ARTIFACTS",
    "output": "PERSONALIZE_OUTPUT",
    "batch_input": "PERSONALIZE_BATCH_INPUT",
}
MAX_RESULTS = 500  # Personalize's numResults limit (batch.MAX_RESULTS)
NAME = re.compile(r"^[A-Za-z0-9_]+$")  # a valid part of a Dagster name (asset key, job name)
# keys of the one-solution form, read before several solutions per dataset group
LEGACY_KEYS = ("solution", "batch_inference", "schedules")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Locations(_Section):
    dataset: str = ".data/demo"  # folder or s3://bucket/prefix of the dataset group
    artifacts: str = ".data/artifacts"  # validated snapshots, features, solution versions
    output: str = ".data/output"  # batch inference .out files
    batch_input: str = ".data/batch-input"  # *.jsonl batch job shards (<batch_input>/<solution>/*.jsonl)


class BatchInference(_Section):
    """What the scheduled FULL and UPDATE runs of a solution write (Personalize's batch
    inference job: job input, numResults, filter, itemExplorationConfig)."""

    input: str = (
        ""  # a JSONL file, or a folder / S3 prefix (every *.jsonl in it); empty: every known user (item for SIMS)
    )
    num_results: int = Field(default=25, ge=1, le=MAX_RESULTS)
    filter: str | None = None  # a Personalize filter expression
    filter_values: dict[str, str] = {}  # values of the filter's $placeholders
    exploration_weight: float = Field(default=0.3, ge=0.0, le=1.0)  # recipes that explore only
    exploration_item_age_cut_off: float = Field(default=30.0, gt=0.0)  # days


class Schedules(_Section):
    full: str = "0 3 * * 0"  # weekly FULL retrain (Sunday 03:00)
    update: str = "0 */2 * * *"  # two-hourly UPDATE
    timezone: str = "UTC"

    @field_validator("full", "update")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"expected a cron expression with 5 fields, got {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as UTC or Europe/Paris)") from None
        return value


class Solution(_Section):
    """One Personalize solution on the dataset group: recipe, hyperparameters, event
    filters, HPO / AutoML (``hpo_config`` / ``automl_config`` in Personalize's shape),
    what its scheduled batch inference writes and when it retrains."""

    name: str  # appears in asset keys, job names, run tags and output paths
    recipe: str = "aws-popularity-count"  # a recipe name or ARN
    hyperparameters: dict[str, str | int | float | bool] = {}
    event_type: str | None = None  # eventType: train only on this EVENT_TYPE
    event_value_threshold: float | None = None  # eventValueThreshold: train only on EVENT_VALUE >= this
    keep_full_versions: int = Field(default=5, ge=1)  # retention: the last N FULL versions and their UPDATEs
    perform_hpo: bool = False
    hpo_config: dict[str, Any] = {}
    perform_automl: bool = False
    automl_config: dict[str, Any] = {}
    batch_inference: BatchInference = BatchInference()
    schedules: Schedules = Schedules()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError(f"{value!r} must contain only letters, digits and underscores (it names assets and jobs)")
        return value

    @field_validator("recipe")
    @classmethod
    def _recipe(cls, value: str) -> str:
        from .recipes import get_recipe

        try:
            get_recipe(value)
        except InputError as exc:
            raise ValueError(exc.message) from None
        return value

    @model_validator(mode="after")
    def _training_settings(self) -> Solution:
        """Hyperparameter names and values, HPO ranges and AutoML settings, checked when the
        file is read rather than when a scheduled run starts training."""
        try:
            self.training_config().resolved_hyperparameters()
        except InputError as exc:
            raise ValueError(exc.message) from None
        return self

    def hyperparameter_strings(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.hyperparameters.items()}

    def training_config(self):
        """The engine's ``training.SolutionConfig`` of this solution."""
        from .create_solution import AutoMLConfig, HPOConfig
        from .training import SolutionConfig

        return SolutionConfig(
            None if self.perform_automl else self.recipe,
            self.hyperparameter_strings(),
            self.event_type,
            self.event_value_threshold,
            perform_hpo=self.perform_hpo,
            hpo=HPOConfig.from_dict(self.hpo_config) if self.perform_hpo else None,
            perform_automl=self.perform_automl,
            automl=AutoMLConfig.from_dict(self.automl_config) if self.perform_automl else None,
        )

    def supports_exploration(self) -> bool:
        """Whether the configured recipe takes itemExplorationConfig (not known ahead for AutoML)."""
        from .recipes import explores, get_recipe

        return not self.perform_automl and explores(get_recipe(self.recipe))

    def recipe_type(self) -> str | None:
        from .recipes import get_recipe

        return None if self.perform_automl else get_recipe(self.recipe).recipe_type


class NewDatasetFiles(_Section):
    minimum_interval_seconds: int = Field(default=300, ge=1)


class Sensors(_Section):
    new_dataset_files: NewDatasetFiles = NewDatasetFiles()


class MaxRuntime(_Section):
    """Seconds after which the run monitor stops a run (tag ``dagster/max_runtime``)."""

    full_retrain: int = Field(default=6 * 3600, ge=1)
    update: int = Field(default=3600, ge=1)
    validate_dataset: int = Field(default=1800, ge=1)


class Retries(_Section):
    """Steps failing on storage (unreachable, 5xx) retry with exponential backoff."""

    max_retries: int = Field(default=3, ge=0)
    delay_seconds: float = Field(default=5.0, ge=0.0)


class Executor(_Section):
    kind: Literal["multiprocess", "in_process", "k8s", "celery"] = "multiprocess"
    config: dict[str, Any] = {}


class Runs(_Section):
    max_runtime_seconds: MaxRuntime = MaxRuntime()
    retries: Retries = Retries()
    executor: Executor = Executor()


class PipelineConfig(_Section):
    locations: Locations = Locations()
    solutions: list[Solution] = Field(default_factory=lambda: [Solution(name="demo")], min_length=1)
    sensors: Sensors = Sensors()
    runs: Runs = Runs()

    @field_validator("solutions")
    @classmethod
    def _unique_names(cls, solutions: list[Solution]) -> list[Solution]:
        names = [s.name for s in solutions]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"solution names must be unique; repeated: {', '.join(duplicated)}")
        return solutions

    def solution(self, name: str) -> Solution:
        for solution in self.solutions:
            if solution.name == name:
                return solution
        raise KeyError(name)


def parse_config(raw: Any, source: str = DEFAULT_FILE) -> PipelineConfig:
    """The model of an already-parsed YAML document (no environment overrides)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"{source}: expected a mapping of sections (locations, solutions, sensors, runs)")
    legacy = [k for k in LEGACY_KEYS if k in raw]
    if legacy:
        raise InputError(
            f"{source}: {legacy[0]}: the one-solution form is no longer read; list each solution under `solutions:` "
            "(- name: ..., recipe: ..., batch_inference: {...}, schedules: {full: ..., update: ...})"
        )
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise InputError.from_validation(exc, source) from None


def _resolved(value: str) -> str:
    return value if value.startswith("s3://") else str(Path(value).expanduser().resolve())


def with_environment(config: PipelineConfig, env: dict[str, str] | os._Environ | None = None) -> PipelineConfig:
    """Locations overridden by PERSONALIZE_DATASET / _ARTIFACTS / _OUTPUT / _BATCH_INPUT and
    local paths made absolute (relative to the working directory)."""
    env = os.environ if env is None else env
    locations = config.locations.model_dump()
    for key, name in ENV_LOCATIONS.items():
        if env.get(name):
            locations[key] = env[name]
    locations = {k: _resolved(v) for k, v in locations.items()}
    return config.model_copy(update={"locations": Locations(**locations)})


def load_config(path: str | os.PathLike | None = None) -> PipelineConfig:
    """``path`` (default: $PERSONALIZE_CONFIG, else ./personalize.yaml; an absent file means
    every default), validated, with the environment's location overrides."""
    file = Path(path if path is not None else os.environ.get(CONFIG_ENV) or DEFAULT_FILE)
    raw: Any = {}
    if file.exists():
        try:
            raw = yaml.safe_load(file.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise InputError(f"{file}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    elif path is not None:
        raise InputError(f"{file}: configuration file does not exist")
    elif os.environ.get(CONFIG_ENV):
        # not the defaults' local folders: on a worker that would silently put artifacts on its own disk
        raise InputError(
            f"{CONFIG_ENV}={file}: configuration file does not exist (working directory {Path.cwd()}); give an "
            "absolute path"
        )
    return with_environment(parse_config(raw, str(file)))


__all__ = [
    "PipelineConfig",
    "Locations",
    "Solution",
    "BatchInference",
    "Schedules",
    "Sensors",
    "Runs",
    "Executor",
    "load_config",
    "parse_config",
    "with_environment",
    "key_path",
]
