"""Training a solution version: FULL from scratch or UPDATE from the latest FULL version."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError
from .features import Features, fingerprint
from .locations import Location, as_location
from .measure import peak_rss_mb
from .recipes import Recipe, get_recipe
from .store import SolutionVersion, load_solution_version, resolve_version, save_solution_version

TRAINING_MODES = ("FULL", "UPDATE")


@dataclass
class SolutionConfig:
    """What a Personalize solution fixes: recipe, hyperparameters, event filters."""

    recipe: str | None = "aws-popularity-count"  # None under AutoML: the tuner picks it
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    event_type: str | None = None
    event_value_threshold: float | None = None
    perform_hpo: bool = False
    hpo: Any = None  # tuning.HPOConfig (None: defaults) when perform_hpo
    perform_automl: bool = False
    automl: Any = None  # tuning.AutoMLConfig (None: defaults) when perform_automl

    def recipe_class(self) -> type[Recipe]:
        if self.recipe is None:
            raise InputError("no recipe: name one, or perform AutoML to have one chosen")
        return get_recipe(self.recipe)

    def resolved_hyperparameters(self) -> dict[str, Any]:
        """The fixed hyperparameters, validated (unknown names / bad values raise
        InputError); under AutoML the recipe is not known yet and none may be fixed."""
        if self.perform_automl:
            from .create_solution import AutoMLConfig
            from .tuning import automl_params, default_recipe_list

            names = (self.automl or AutoMLConfig()).recipe_list or default_recipe_list(None)
            classes = [get_recipe(n) for n in names]
            declared = {hp.name for cls in classes for hp in cls.hyperparameters}
            unknown = sorted(set(self.hyperparameters) - declared)
            if unknown:
                raise InputError(
                    f"no AutoML candidate ({', '.join(c.name for c in classes)}) has a hyperparameter {unknown[0]!r}"
                )
            for cls in classes:
                automl_params(cls, self.hyperparameters)  # values checked per candidate
            if self.hpo is not None:
                self.hpo.check_objective()
            return {}
        resolved = self.recipe_class().resolve_hyperparameters(self.hyperparameters)
        if self.perform_hpo:
            from .create_solution import HPOConfig
            from .tuning import search_space

            search_space(self.recipe_class(), self.hpo or HPOConfig(), self.hyperparameters)  # ranges checked up front
        return resolved

    def featurize_options(self):
        if self.perform_automl:  # the same data for every candidate (see tuning.py)
            from .features import FeaturizeOptions

            return FeaturizeOptions(event_type=self.event_type, event_value_threshold=self.event_value_threshold)
        cls = self.recipe_class()
        return cls.featurize_options(self.resolved_hyperparameters(), self.event_type, self.event_value_threshold)

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"eventType": self.event_type, "eventValueThreshold": self.event_value_threshold}
        if self.perform_hpo:
            from .create_solution import HPOConfig

            out["performHPO"] = True
            out["hpoConfig"] = (self.hpo or HPOConfig()).to_dict()
        if self.perform_automl:
            from .create_solution import AutoMLConfig

            out["performAutoML"] = True
            out["autoMLConfig"] = (self.automl or AutoMLConfig()).to_dict()
        return out


def _training_mode(training_mode: str, config: SolutionConfig, keep_full_versions: int | None) -> str:
    """The training mode, upper-cased; InputError for a bad mode or retention, or for HPO /
    AutoML in an UPDATE."""
    mode = (training_mode or "FULL").upper()
    if mode not in TRAINING_MODES:
        raise InputError(f"training mode {training_mode!r} must be FULL or UPDATE")
    if keep_full_versions is not None and keep_full_versions < 1:
        raise InputError(f"keep_full_versions must be at least 1, got {keep_full_versions}")
    if mode == "UPDATE" and (config.perform_hpo or config.perform_automl):
        raise InputError(
            "HPO and AutoML choose a model for FULL training; an UPDATE keeps the FULL version's recipe and "
            "hyperparameters"
        )
    return mode


def _update_base(config: SolutionConfig, solution: str | Location, base: str | Location | None) -> SolutionVersion:
    """The version an UPDATE starts from: the latest of ``base`` (default: ``solution``),
    which must have a FULL version and have been trained with ``config``'s recipe."""
    base_loc = as_location(base) if base is not None else as_location(solution)
    try:
        resolve_version(base_loc, full_only=True)  # an UPDATE chain starts from a FULL version
        base_version = load_solution_version(base_loc)
    except InputError as exc:
        raise InputError(f"UPDATE needs a FULL solution version to start from: {exc}") from None
    cls = config.recipe_class()
    if base_version.manifest["recipe"] != cls.name:
        raise InputError(
            f"UPDATE with recipe {cls.name} cannot start from {base_version.location.url}, "
            f"which was trained with {base_version.manifest['recipe']}"
        )
    return base_version


def _full_recipe(features: Features, config: SolutionConfig, seed: int, log) -> tuple[Recipe, dict[str, Any]]:
    """The (untrained) recipe of a FULL training and the manifest's selection record: chosen
    by ``tuning.select`` under HPO / AutoML (empty record otherwise)."""
    if config.perform_hpo or config.perform_automl:
        from .tuning import select

        cls, params, selection = select(features, config, seed=seed, log=log)
        return cls(**params), selection
    return config.recipe_class()(**config.hyperparameters), {}


def _fit(recipe: Recipe, features: Features, base_version: SolutionVersion | None, seed: int) -> float:
    """Train ``recipe`` (an update of ``base_version`` when given); return the seconds taken."""
    start = time.perf_counter()
    if base_version is not None:
        recipe.update(
            features, seed=seed, previous_item_ids=base_version.item_ids, previous_user_ids=base_version.user_ids
        )
    else:
        recipe.fit(features, seed=seed)
    return time.perf_counter() - start


def _manifest(
    features: Features,
    config: SolutionConfig,
    recipe: Recipe,
    mode: str,
    base_version: SolutionVersion | None,
    seed: int,
    solution_name: str | None,
    seconds: float,
    selection: dict[str, Any],
) -> dict[str, Any]:
    """The manifest of a new solution version (``store.save_solution_version`` adds the rest)."""
    return {
        "solution": solution_name,
        "training_mode": mode,
        "base_version": base_version.version_id if base_version else None,
        "full_version": (base_version.manifest.get("full_version") or base_version.version_id)
        if base_version
        else None,
        "solution_config": config.to_manifest(),
        "seed": seed,
        "dataset": {
            "location": features.info.get("dataset_location"),
            "fingerprints": features.info.get("fingerprints", {}),
            "files": features.info.get("files", {}),
            "imports": features.info.get("imports", {}),
            "features_fingerprint": fingerprint(features),
            "counts": features.info.get("counts", {}),
        },
        "timings": {
            "train_seconds": round(seconds, 4),
            "train_events_per_second": round(features.n_interactions / seconds, 1) if seconds > 0 else None,
            "featurize_seconds": features.info.get("seconds"),
            "peak_rss_mb": peak_rss_mb(),
        },
        "training": recipe.training_stats(),
        **selection,
    }


def train(
    features: Features,
    config: SolutionConfig,
    solution: str | Location,
    training_mode: str = "FULL",
    base: str | Location | None = None,
    seed: int = 42,
    solution_name: str | None = None,
    keep_full_versions: int | None = None,
    log=None,
) -> SolutionVersion:
    """Train and store a new solution version under ``solution``; return it.

    UPDATE starts from the latest version of ``base`` (default: ``solution``): the FULL
    version, or the UPDATE that last refreshed it, so that each UPDATE trains on what is new
    since the previous one; it refuses to run when there is no FULL version or when the
    base was trained with another recipe. With
    ``keep_full_versions``, older versions beyond the retention are deleted once the new
    one is in place. With ``perform_automl`` / ``perform_hpo`` the recipe and
    hyperparameters are chosen on the validation split first (``tuning.select``; progress
    lines go to ``log``) and the trials are recorded in the manifest."""
    mode = _training_mode(training_mode, config, keep_full_versions)
    base_version: SolutionVersion | None = None
    selection: dict[str, Any] = {}
    if mode == "UPDATE":
        base_version = _update_base(config, solution, base)
        recipe = base_version.recipe
    else:
        recipe, selection = _full_recipe(features, config, seed, log)
    seconds = _fit(recipe, features, base_version, seed)
    manifest = _manifest(features, config, recipe, mode, base_version, seed, solution_name, seconds, selection)
    return save_solution_version(solution, recipe, features, manifest, keep_full=keep_full_versions)


def describe(version: SolutionVersion) -> dict[str, Any]:
    m = version.manifest
    return {
        "solution_version": m["solution_version"],
        "location": version.location.url,
        "recipe": m["recipe"],
        "training_mode": m.get("training_mode"),
        **m.get("timings", {}),
        **_selection_summary(m),
    }


def _selection_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "automl" in manifest:
        a = manifest["automl"]
        out["automl"] = {
            "metric": a["config"]["metricName"],
            "chosen": a["chosen"],
            "candidates": {c["recipe"]: round(c["value"], 6) for c in a["candidates"]},
        }
    if "hpo" in manifest and "best" in manifest["hpo"]:
        h = manifest["hpo"]
        out["hpo"] = {
            "metric": h["config"]["hpoObjective"]["metricName"],
            "trials": len(h["trials"]),
            "default_value": h["default_value"],
            "best_value": h["best"]["value"],
            "best_params": h["best"]["params"],
        }
    return out


__all__ = ["SolutionConfig", "train", "describe", "peak_rss_mb"]
