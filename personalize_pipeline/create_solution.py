"""CreateSolution requests as Amazon Personalize defines them (``recipeArn``, ``performHPO``
+ ``hpoConfig``, ``performAutoML`` + ``autoMLConfig``, ``solutionConfig``), read from JSON or
YAML into the engine's :class:`HPOConfig`, :class:`AutoMLConfig` and SolutionConfig arguments.

One pydantic model per JSON object of the request, keys as Personalize spells them; an
unknown key, an unsupported option or a bad value is one InputError line naming its key path
(``InputError.from_validation``). What the ranges name is checked against the recipe later,
by ``tuning.search_space``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import InputError
from .recipes import Recipe, get_recipe, recipe_name

MAX_TRAINING_JOBS = 40
MAX_PARALLEL_JOBS = 10
DEFAULT_OBJECTIVE = "normalized_discounted_cumulative_gain_at_10"
DEFAULT_AUTOML_METRIC = "precision_at_25"
# what an objective may name: every metric tuning.score_on_split reports
VALIDATION_METRICS = tuple(
    sorted(
        {"coverage", "mean_reciprocal_rank_at_25"}
        | {
            f"{m}_at_{k}"
            for k in (5, 10, 25)
            for m in ("precision", "normalized_discounted_cumulative_gain", "hit_rate", "mean_reciprocal_rank")
        }
    )
)


def _metric(name: str) -> str:
    if name not in VALIDATION_METRICS:
        raise ValueError(f"{name!r} is not a metric (use one of {', '.join(VALIDATION_METRICS)})")
    return name


def _between(low: int, high: int) -> AfterValidator:
    def check(number: int) -> int:
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}, got {number}")
        return number

    return AfterValidator(check)


def _true_or_false(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"must be true or false, got {value!r}")


def _or(default: Any) -> BeforeValidator:
    """An absent, null or empty value means ``default`` (Personalize's optional fields)."""
    return BeforeValidator(lambda value: value or default)


class _Shape(BaseModel):
    """One JSON object of a Personalize request: an unknown key is an error listing the known."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            unknown = sorted(str(k) for k in value if k not in cls.model_fields)
            if unknown:
                raise ValueError(cls._unknown(unknown[0]))
        return value

    @classmethod
    def _unknown(cls, key: str) -> str:
        return f"unknown key {key!r} (known: {', '.join(cls.model_fields)})"


class _HPOObjective(_Shape):
    type: Annotated[str, _or("Maximize")] = "Maximize"
    metricName: Annotated[str, _or(DEFAULT_OBJECTIVE), AfterValidator(_metric)] = DEFAULT_OBJECTIVE
    metricRegex: Any = None  # SageMaker's; accepted and not used

    @field_validator("type")
    @classmethod
    def _direction(cls, value: str) -> str:
        if value not in ("Maximize", "Minimize"):
            raise ValueError(f"must be Maximize or Minimize, got {value!r}")
        return value


class _HPOResourceConfig(_Shape):
    maxNumberOfTrainingJobs: Annotated[int, _between(1, MAX_TRAINING_JOBS)] = 10
    maxParallelTrainingJobs: Annotated[int, _between(1, MAX_PARALLEL_JOBS)] = 1


class _NumericRange(_Shape):
    name: str
    minValue: Any  # checked against the hyperparameter's type and range by search_space
    maxValue: Any


class _CategoricalRange(_Shape):
    name: str
    values: list[Any] = Field(min_length=1)


class _HyperParameterRanges(_Shape):
    integerHyperParameterRanges: list[_NumericRange] = []
    continuousHyperParameterRanges: list[_NumericRange] = []
    categoricalHyperParameterRanges: list[_CategoricalRange] = []


class _HPOConfigShape(_Shape):
    hpoObjective: Annotated[_HPOObjective, _or({})] = _HPOObjective()
    hpoResourceConfig: Annotated[_HPOResourceConfig, _or({})] = _HPOResourceConfig()
    algorithmHyperParameterRanges: Annotated[_HyperParameterRanges, _or({})] = _HyperParameterRanges()


class _AutoMLConfigShape(_Shape):
    metricName: Annotated[str, _or(DEFAULT_AUTOML_METRIC), AfterValidator(_metric)] = DEFAULT_AUTOML_METRIC
    recipeList: Annotated[list[str], _or([])] = []

    @field_validator("recipeList")
    @classmethod
    def _candidates(cls, recipes: list[str]) -> list[str]:
        names = [recipe_name(r) for r in recipes]
        for name in names:
            try:
                automl_candidate(name)
            except InputError as exc:
                raise ValueError(exc.message) from None
        return names


class _SolutionConfigShape(_Shape):
    eventValueThreshold: float | None = None
    hpoConfig: Annotated[_HPOConfigShape | None, _or(None)] = None
    algorithmHyperParameters: Annotated[dict[str, Any], _or({})] = {}
    featureTransformationParameters: Annotated[dict[str, Any], _or({})] = {}
    autoMLConfig: Annotated[_AutoMLConfigShape | None, _or(None)] = None

    @classmethod
    def _unknown(cls, key: str) -> str:
        return f"{key} is not supported (supported: {', '.join(cls.model_fields)})"


class _CreateSolution(_Shape):
    name: Any = None
    datasetGroupArn: Any = None
    recipeArn: str | None = None
    eventType: str | None = None
    performHPO: Annotated[bool, PlainValidator(_true_or_false)] = False
    performAutoML: Annotated[bool, PlainValidator(_true_or_false)] = False
    performAutoTraining: Any = None
    solutionConfig: Annotated[_SolutionConfigShape, _or({})] = _SolutionConfigShape()
    tags: Any = None

    @model_validator(mode="after")
    def _consistent(self) -> _CreateSolution:
        if self.performAutoML and self.recipeArn:
            raise ValueError("give either recipeArn or performAutoML, not both (as in Personalize)")
        if not self.performAutoML and not self.recipeArn:
            raise ValueError("recipeArn is required unless performAutoML is true")
        if self.solutionConfig.hpoConfig and not self.performHPO:
            raise ValueError("solutionConfig.hpoConfig is given but performHPO is not true")
        if self.solutionConfig.autoMLConfig and not self.performAutoML:
            raise ValueError("solutionConfig.autoMLConfig is given but performAutoML is not true")
        return self


def _validated(shape: type[_Shape], doc: Any, source: str = "") -> Any:
    try:
        return shape.model_validate({} if doc is None else doc)
    except ValidationError as exc:
        raise InputError.from_validation(exc, source) from None


@dataclass
class HPOConfig:
    """Personalize's ``hpoConfig``: objective, budget and the ranges to search."""

    metric_name: str = DEFAULT_OBJECTIVE
    direction: str = "Maximize"
    max_training_jobs: int = 10
    max_parallel_jobs: int = 1
    integer_ranges: list[dict[str, Any]] = field(default_factory=list)
    continuous_ranges: list[dict[str, Any]] = field(default_factory=list)
    categorical_ranges: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | None) -> HPOConfig:
        return cls._from_shape(_validated(_HPOConfigShape, doc))

    @classmethod
    def _from_shape(cls, shape: _HPOConfigShape) -> HPOConfig:
        ranges = shape.algorithmHyperParameterRanges
        return cls(
            metric_name=shape.hpoObjective.metricName,
            direction=shape.hpoObjective.type,
            max_training_jobs=shape.hpoResourceConfig.maxNumberOfTrainingJobs,
            max_parallel_jobs=shape.hpoResourceConfig.maxParallelTrainingJobs,
            integer_ranges=[r.model_dump() for r in ranges.integerHyperParameterRanges],
            continuous_ranges=[r.model_dump() for r in ranges.continuousHyperParameterRanges],
            categorical_ranges=[r.model_dump() for r in ranges.categoricalHyperParameterRanges],
        )

    def check_objective(self) -> None:
        _validated(_HPOConfigShape, {"hpoObjective": {"type": self.direction, "metricName": self.metric_name}})

    def to_dict(self) -> dict[str, Any]:
        """Back to Personalize's shape (what the manifest records)."""
        return {
            "hpoObjective": {"type": self.direction, "metricName": self.metric_name},
            "hpoResourceConfig": {
                "maxNumberOfTrainingJobs": str(self.max_training_jobs),
                "maxParallelTrainingJobs": str(self.max_parallel_jobs),
            },
            "algorithmHyperParameterRanges": {
                "integerHyperParameterRanges": self.integer_ranges,
                "continuousHyperParameterRanges": self.continuous_ranges,
                "categoricalHyperParameterRanges": self.categorical_ranges,
            },
        }


@dataclass
class AutoMLConfig:
    """Personalize's ``autoMLConfig``: the metric to maximise and the recipes to try."""

    metric_name: str = DEFAULT_AUTOML_METRIC
    recipe_list: list[str] = field(default_factory=list)  # empty: the default list
    include: list[str] = field(default_factory=list)  # candidates added to the list (CLI --recipe with --automl)

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | None) -> AutoMLConfig:
        return cls._from_shape(_validated(_AutoMLConfigShape, doc))

    @classmethod
    def _from_shape(cls, shape: _AutoMLConfigShape) -> AutoMLConfig:
        return cls(shape.metricName, list(shape.recipeList))

    def to_dict(self) -> dict[str, Any]:
        return {"metricName": self.metric_name, "recipeList": list(self.recipe_list)}


def parse_create_solution(doc: Any, source: str = "solution config") -> dict[str, Any]:
    """A CreateSolution request (JSON/YAML already parsed) as SolutionConfig keyword
    arguments. Unknown keys, unsupported options and bad values raise InputError."""
    request: _CreateSolution = _validated(_CreateSolution, doc, source)
    sc = request.solutionConfig
    return {
        "recipe": recipe_name(request.recipeArn) if request.recipeArn else None,
        "hyperparameters": {**sc.algorithmHyperParameters, **sc.featureTransformationParameters},
        "event_type": request.eventType,
        "event_value_threshold": sc.eventValueThreshold,
        "perform_hpo": request.performHPO,
        "hpo": HPOConfig._from_shape(sc.hpoConfig or _HPOConfigShape()) if request.performHPO else None,
        "perform_automl": request.performAutoML,
        "automl": AutoMLConfig._from_shape(sc.autoMLConfig or _AutoMLConfigShape()) if request.performAutoML else None,
    }


def read_solution_config(location: str) -> dict[str, Any]:
    """Read a CreateSolution JSON or YAML file (local or s3://) into SolutionConfig kwargs."""
    import yaml

    from .locations import as_location

    loc = as_location(location)
    if not loc.exists():
        raise InputError(f"{loc.url}: solution config file does not exist")
    text = loc.read_text()
    try:
        doc = json.loads(text) if loc.url.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"{loc.url}: not valid {'JSON' if loc.url.endswith('.json') else 'YAML'} ({first})") from None
    return parse_create_solution(doc, loc.url)


def automl_candidate(name: str) -> type[Recipe]:
    """The recipe class of an AutoML candidate: a USER_PERSONALIZATION recipe."""
    cls = get_recipe(name)
    if cls.recipe_type != "USER_PERSONALIZATION":
        raise InputError(f"{cls.name} is a {cls.recipe_type} recipe; AutoML chooses among USER_PERSONALIZATION recipes")
    return cls


__all__ = [
    "HPOConfig",
    "AutoMLConfig",
    "parse_create_solution",
    "read_solution_config",
    "automl_candidate",
    "VALIDATION_METRICS",
    "MAX_TRAINING_JOBS",
]
