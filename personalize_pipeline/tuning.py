"""Model selection as Amazon Personalize does it: HPO (``performHPO`` + ``hpoConfig``) and
AutoML (``performAutoML`` + ``autoMLConfig``); the CreateSolution request that asks for them
is read by :mod:`personalize_pipeline.create_solution`.

Validation split, distinct from every test split: each user's *second-to-last* event is the
truth, the model trains on everything but each user's last two events
(:func:`~personalize_pipeline.metrics.leave_last_out_split` with ``stage="validation"``), so
neither the leave-last-out test item (the last event) nor the time-holdout test window is
ever looked at while choosing. Every candidate is scored on the same split with both
metric families (Personalize's ``precision_at_K``, ``normalized_discounted_cumulative_gain_at_K``,
``mean_reciprocal_rank_at_25``, ``coverage`` and the research ``hit_rate_at_K``,
``mean_reciprocal_rank_at_K``); the objective is any one of them.

HPO uses optuna's TPE sampler, seeded. Trial 0 is always the recipe's defaults (when they
lie inside the ranges), so the manifest shows what tuning gained over them. Integer and
continuous ranges are searched on a log scale when they span a decade or more (e.g.
``learning_rate``), uniformly otherwise; categorical ranges list their values.

AutoML trains each recipe of ``recipeList`` with its defaults on the validation split and
keeps the best by ``metricName`` (hyperparameters fixed in the config apply to the candidates
that declare them, e.g. ``epochs`` to the HRNN recipes; Personalize ignores them).
Personalize restricts AutoML to the HRNN recipes; here any USER_PERSONALIZATION recipe may be
listed, and the default list puts aws-popularity-count next to aws-hrnn and
aws-user-personalization-v2 (and aws-hrnn-metadata when the data has metadata), so a solution
never ships a model that loses to popularity. All candidates see the same featurized data: the
history-length percentile filters, which differ between recipes, are neutral (0 and 1)
under AutoML and recorded as such in the chosen hyperparameters. With both AutoML and HPO,
HPO tunes the recipe AutoML chose.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .create_solution import AutoMLConfig, HPOConfig, automl_candidate
from .errors import InputError
from .features import Features
from .recipes import Recipe
from .recipes.base import HyperParameter

if TYPE_CHECKING:
    import optuna

NEUTRAL_FEATURIZATION = {"min_user_history_length_percentile": 0.0, "max_user_history_length_percentile": 1.0}

# Without ranges in the config, HPO searches every tunable hyperparameter over its declared
# range, except where that range is mostly useless values: there, this narrower default.
DEFAULT_SEARCH = {"learning_rate": (0.001, 0.05), "dropout_embed": (0.0, 0.5), "dropout_hidden": (0.0, 0.5)}

Log = Callable[[str], None]


# --- search space -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dimension:
    hp: HyperParameter
    kind: str  # integer, continuous, categorical
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high) of an integer or continuous dimension."""
        assert self.low is not None and self.high is not None, f"{self.hp.name}: {self.kind} dimension without bounds"
        return self.low, self.high

    @property
    def log(self) -> bool:
        if self.kind == "categorical" or self.low is None or self.high is None:
            return False
        return self.low > 0 and self.high / self.low >= 10

    def suggest(self, trial: optuna.Trial) -> Any:
        name = self.hp.name
        if self.kind == "integer":
            low, high = self.bounds
            return trial.suggest_int(name, int(low), int(high), log=self.log)
        if self.kind == "continuous":
            low, high = self.bounds
            return trial.suggest_float(name, float(low), float(high), log=self.log)
        return trial.suggest_categorical(name, list(self.values))

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in self.values
        return self.low <= value <= self.high

    def describe(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"name": self.hp.name, "kind": self.kind, "values": list(self.values)}
        return {"name": self.hp.name, "kind": self.kind, "minValue": self.low, "maxValue": self.high, "log": self.log}


_KIND_OF_TYPE = {int: "integer", float: "continuous", bool: "categorical", str: "categorical"}


def search_space(recipe_cls: type[Recipe], hpo: HPOConfig, fixed: dict[str, Any] | None = None) -> list[Dimension]:
    """The ranges of ``hpo`` checked against the recipe's declared hyperparameters; with no
    ranges given, every tunable hyperparameter over its whole declared range."""
    declared = {hp.name: hp for hp in recipe_cls.hyperparameters}
    given = (
        [("integer", r) for r in hpo.integer_ranges]
        + [("continuous", r) for r in hpo.continuous_ranges]
        + [("categorical", r) for r in hpo.categorical_ranges]
    )
    dims: list[Dimension] = []
    for kind, spec in given:
        where = f"{kind}HyperParameterRanges"  # shapes checked when the request was read
        name = spec["name"]
        if name not in declared:
            known = ", ".join(h.name for h in recipe_cls.hyperparameters if h.tunable) or "none"
            raise InputError(f"{where}: recipe {recipe_cls.name} has no hyperparameter {name!r} (tunable: {known})")
        hp = declared[name]
        if not hp.tunable:
            raise InputError(f"{where}: hyperparameter {name} of {recipe_cls.name} is not tunable by HPO")
        if _KIND_OF_TYPE[hp.type] != kind:
            kind_of_hp = _KIND_OF_TYPE[hp.type]
            raise InputError(
                f"{where}: hyperparameter {name} is {kind_of_hp}, give its range in {kind_of_hp}HyperParameterRanges"
            )
        if any(d.hp.name == name for d in dims):
            raise InputError(f"{where}: hyperparameter {name} has more than one range")
        if fixed and name in fixed:
            raise InputError(
                f"{where}: hyperparameter {name} is both fixed (algorithmHyperParameters / --hp) and tuned"
            )
        if kind == "categorical":
            dims.append(Dimension(hp, kind, values=tuple(dict.fromkeys(hp.parse(v) for v in spec["values"]))))
            continue
        low, high = hp.parse(spec["minValue"]), hp.parse(spec["maxValue"])
        if low > high:
            raise InputError(f"{where}: {name} minValue {low} is above maxValue {high}")
        dims.append(Dimension(hp, kind, low, high))
    if not given:
        for hp in recipe_cls.hyperparameters:
            if not hp.tunable or (fixed and hp.name in fixed):
                continue
            kind = _KIND_OF_TYPE[hp.type]
            if kind == "categorical":
                dims.append(
                    Dimension(
                        hp,
                        kind,
                        values=tuple(hp.choices) if hp.choices else (True, False) if hp.type is bool else (hp.default,),
                    )
                )
            else:
                declared_low, declared_high = _declared_range(hp)
                low, high = DEFAULT_SEARCH.get(hp.name, (declared_low, declared_high))
                dims.append(Dimension(hp, kind, max(low, declared_low), min(high, declared_high)))
    if not dims:
        raise InputError(f"recipe {recipe_cls.name} has no tunable hyperparameters to search")
    return dims


def _declared_range(hp: HyperParameter) -> tuple[float, float]:
    """The declared [low, high] of a tunable integer or continuous hyperparameter."""
    assert hp.low is not None and hp.high is not None, f"tunable hyperparameter {hp.name} declares no range"
    return hp.low, hp.high


# --- validation split and scoring ---------------------------------------------------------------
def validation_split(features: Features):
    from .metrics import leave_last_out_split

    try:
        return leave_last_out_split(features, stage="validation")
    except InputError:
        raise InputError("HPO and AutoML need users with 3 or more interactions for the validation split") from None


def score_on_split(
    recipe_cls: type[Recipe], params: dict[str, Any], split, seed: int = 42
) -> tuple[dict[str, float], float]:
    """Train on the split's training part and return (both metric families, seconds)."""
    from .metrics import MAX_K, ranking_metrics, recommend_split

    start = time.perf_counter()
    model = recipe_cls(**params)
    model.fit(split.train, seed=seed)
    recommended = recommend_split(model, split, MAX_K)
    n_items = split.train.n_items
    metrics = {
        **ranking_metrics(recommended, dataclasses.replace(split, protocol="personalize"), n_items),
        **ranking_metrics(recommended, split, n_items),
    }
    return dict(sorted(metrics.items())), round(time.perf_counter() - start, 3)


# --- HPO ---------------------------------------------------------------------------------------
def run_hpo(
    features: Features,
    recipe_cls: type[Recipe],
    hpo: HPOConfig,
    fixed: dict[str, Any] | None = None,
    seed: int = 42,
    split=None,
    log: Log | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Search the hyperparameters of ``recipe_cls``; return (best resolved hyperparameters,
    the record for the manifest: config, space, every trial, best, defaults)."""
    import optuna

    hpo.check_objective()
    fixed = dict(fixed or {})
    recipe_cls.resolve_hyperparameters(fixed)  # unknown names / bad values first
    dims = search_space(recipe_cls, hpo, fixed)
    split = split if split is not None else validation_split(features)
    log = log or (lambda _msg: None)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction: Literal["maximize", "minimize"] = "maximize" if hpo.direction == "Maximize" else "minimize"
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=seed))
    defaults = recipe_cls.resolve_hyperparameters(fixed)
    default_point = {d.hp.name: defaults[d.hp.name] for d in dims}
    starts_at_defaults = all(d.contains(default_point[d.hp.name]) for d in dims)
    if starts_at_defaults:
        study.enqueue_trial(default_point)

    def objective(trial: optuna.Trial) -> float:
        params = {**fixed, **{d.hp.name: d.suggest(trial) for d in dims}}
        metrics, seconds = score_on_split(recipe_cls, params, split, seed)
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("seconds", seconds)
        value = metrics[hpo.metric_name]
        log(
            f"HPO trial {trial.number + 1}/{hpo.max_training_jobs}: {hpo.metric_name}={value:.4f} "
            f"({seconds:.1f}s) {_short(params, dims)}"
        )
        return value

    start = time.perf_counter()
    study.optimize(objective, n_trials=hpo.max_training_jobs, n_jobs=min(hpo.max_parallel_jobs, hpo.max_training_jobs))
    trials = [
        {
            "number": t.number,
            "params": {d.hp.name: _plain(t.params.get(d.hp.name)) for d in dims},
            "value": t.value,
            "metrics": t.user_attrs.get("metrics", {}),
            "seconds": t.user_attrs.get("seconds"),
            "defaults": bool(starts_at_defaults and t.number == 0),
            "state": t.state.name,
        }
        for t in sorted(study.trials, key=lambda t: t.number)
    ]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    if not complete:
        raise RuntimeError("no HPO trial completed")
    best = (max if direction == "maximize" else min)(complete, key=lambda t: (t["value"], -t["number"]))
    best_params = recipe_cls.resolve_hyperparameters({**fixed, **best["params"]})
    default_trial = next((t for t in trials if t["defaults"]), None)
    record = {
        "recipe": recipe_cls.name,
        "config": hpo.to_dict(),
        "validation": {
            "split": "leave-last-out validation (each user's second-to-last event)",
            "users": int(len(split.test_users)),
            "train_events": int(split.train.n_interactions),
        },
        "search_space": [d.describe() for d in dims],
        "sampler": f"optuna {optuna.__version__} TPESampler(seed={seed})",
        "trials": trials,
        "best": {"number": best["number"], "params": best["params"], "value": best["value"]},
        "default_value": default_trial["value"] if default_trial else None,
        "improvement_over_defaults": _relative(best["value"], default_trial["value"]) if default_trial else None,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return best_params, record


# --- AutoML -------------------------------------------------------------------------------------
def default_recipe_list(features: Features | None) -> list[str]:
    """aws-hrnn, aws-user-personalization-v2 and aws-popularity-count, plus aws-hrnn-metadata
    when the data has item or user metadata (``features`` None: the list without looking at
    the data, for checks)."""
    names = ["aws-hrnn", "aws-user-personalization-v2", "aws-popularity-count"]
    if features is None:
        return ["aws-hrnn", "aws-hrnn-metadata", "aws-user-personalization-v2", "aws-popularity-count"]
    has_metadata = any(c != "ITEM_ID" for c in features.items.columns) or any(
        c != "USER_ID" for c in features.users.columns
    )
    if has_metadata:
        names.insert(1, "aws-hrnn-metadata")
    return names


def run_automl(
    features: Features,
    automl: AutoMLConfig,
    seed: int = 42,
    split=None,
    log: Log | None = None,
    fixed: dict[str, Any] | None = None,
) -> tuple[type[Recipe], dict[str, Any], dict[str, Any]]:
    """Train every candidate with its defaults on the validation split; return (the best
    recipe class, its hyperparameters, the record for the manifest). ``fixed``
    hyperparameters apply to the candidates that declare them (e.g. ``epochs`` to the HRNN
    recipes); Personalize would ignore them under AutoML."""
    names = list(automl.recipe_list or default_recipe_list(features))
    names += [n for n in automl.include if n not in names]
    classes = [automl_candidate(n) for n in names]
    split = split if split is not None else validation_split(features)
    log = log or (lambda _msg: None)
    start = time.perf_counter()
    candidates: list[dict[str, Any]] = []
    for cls in classes:
        params = automl_params(cls, fixed)
        metrics, seconds = score_on_split(cls, params, split, seed)
        value = metrics[automl.metric_name]
        log(f"AutoML {cls.name}: {automl.metric_name}={value:.4f} ({seconds:.1f}s)")
        candidates.append(
            {"recipe": cls.name, "value": value, "metrics": metrics, "seconds": seconds, "hyperparameters": params}
        )
    best = max(range(len(candidates)), key=lambda i: (candidates[i]["value"], -i))  # ties: first listed
    record = {
        "config": {"metricName": automl.metric_name, "recipeList": [c.name for c in classes]},
        "validation": {
            "split": "leave-last-out validation (each user's second-to-last event)",
            "users": int(len(split.test_users)),
        },
        "candidates": candidates,
        "chosen": candidates[best]["recipe"],
        "seconds": round(time.perf_counter() - start, 3),
    }
    return classes[best], candidates[best]["hyperparameters"], record


def automl_params(cls: type[Recipe], fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """A candidate's hyperparameters: defaults, neutral featurization filters, and the
    ``fixed`` values it declares."""
    declared = {hp.name for hp in cls.hyperparameters}
    given = {**NEUTRAL_FEATURIZATION, **(fixed or {})}
    return cls.resolve_hyperparameters({k: v for k, v in given.items() if k in declared})


def select(
    features: Features, config, seed: int = 42, log: Log | None = None
) -> tuple[type[Recipe], dict[str, Any], dict[str, Any]]:
    """AutoML and/or HPO as ``config`` (a SolutionConfig) asks: (recipe class, resolved
    hyperparameters, {"automl": ..., "hpo": ...} records)."""
    records: dict[str, Any] = {}
    split = validation_split(features)
    if config.perform_automl:
        cls, params, records["automl"] = run_automl(
            features, config.automl or AutoMLConfig(), seed, split, log, config.hyperparameters
        )
        declared = {hp.name for hp in cls.hyperparameters}
        fixed = {k: v for k, v in {**NEUTRAL_FEATURIZATION, **config.hyperparameters}.items() if k in declared}
    else:
        cls = config.recipe_class()
        fixed = dict(config.hyperparameters)
        params = cls.resolve_hyperparameters(fixed)
    if config.perform_hpo:
        if not any(hp.tunable for hp in cls.hyperparameters):
            if config.perform_automl:
                records["hpo"] = {"recipe": cls.name, "skipped": f"{cls.name} has no tunable hyperparameters"}
                return cls, params, records
            raise InputError(f"recipe {cls.name} has no tunable hyperparameters to search")
        params, records["hpo"] = run_hpo(features, cls, config.hpo or HPOConfig(), fixed, seed, split, log)
    return cls, params, records


# --- helpers ------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _relative(best: float, default: float) -> float | None:
    return None if not default or not math.isfinite(default) else round(best / default - 1.0, 6)


def _short(params: dict[str, Any], dims: list[Dimension]) -> str:
    return " ".join(
        f"{d.hp.name}={params[d.hp.name]:.4g}"
        if isinstance(params[d.hp.name], float)
        else f"{d.hp.name}={params[d.hp.name]}"
        for d in dims
    )


__all__ = [
    "search_space",
    "validation_split",
    "score_on_split",
    "run_hpo",
    "run_automl",
    "select",
]
