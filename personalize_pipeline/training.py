"""Training a solution version: FULL from scratch or UPDATE from the latest FULL version."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError
from .features import Features, fingerprint
from .locations import Location, as_location
from .recipes import Recipe, get_recipe
from .store import SolutionVersion, load_solution_version, save_solution_version

TRAINING_MODES = ("FULL", "UPDATE")


@dataclass
class SolutionConfig:
    """What a Personalize solution fixes: recipe, hyperparameters, event filters."""

    recipe: str = "aws-popularity-count"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    event_type: str | None = None
    event_value_threshold: float | None = None

    def recipe_class(self) -> type[Recipe]:
        return get_recipe(self.recipe)

    def resolved_hyperparameters(self) -> dict[str, Any]:
        return self.recipe_class().resolve_hyperparameters(self.hyperparameters)

    def featurize_options(self):
        cls = self.recipe_class()
        return cls.featurize_options(self.resolved_hyperparameters(), self.event_type, self.event_value_threshold)

    def to_manifest(self) -> dict[str, Any]:
        return {"eventType": self.event_type, "eventValueThreshold": self.event_value_threshold}


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def train(
    features: Features,
    config: SolutionConfig,
    solution: str | Location,
    training_mode: str = "FULL",
    base: str | Location | None = None,
    seed: int = 42,
    solution_name: str | None = None,
    keep_full_versions: int | None = None,
) -> SolutionVersion:
    """Train and store a new solution version under ``solution``; return it.

    UPDATE starts from the latest FULL version of ``base`` (default: ``solution``) and
    refuses to run when there is none or when it was trained with another recipe. With
    ``keep_full_versions``, older versions beyond the retention are deleted once the new
    one is in place."""
    mode = (training_mode or "FULL").upper()
    if mode not in TRAINING_MODES:
        raise InputError(f"training mode {training_mode!r} must be FULL or UPDATE")
    if keep_full_versions is not None and keep_full_versions < 1:
        raise InputError(f"keep_full_versions must be at least 1, got {keep_full_versions}")
    base_version: SolutionVersion | None = None
    if mode == "UPDATE":
        base_loc = as_location(base) if base is not None else as_location(solution)
        try:
            base_version = load_solution_version(base_loc, full_only=True)
        except InputError as exc:
            raise InputError(f"UPDATE needs a FULL solution version to start from: {exc}") from None
        cls = config.recipe_class()
        if base_version.manifest["recipe"] != cls.name:
            raise InputError(
                f"UPDATE with recipe {cls.name} cannot start from {base_version.location.url}, "
                f"which was trained with {base_version.manifest['recipe']}"
            )
        recipe = base_version.recipe
    else:
        recipe = config.recipe_class()(**config.hyperparameters)
    start = time.perf_counter()
    if base_version is not None:
        recipe.update(features, seed=seed, previous_item_ids=base_version.item_ids)
    else:
        recipe.fit(features, seed=seed)
    seconds = time.perf_counter() - start
    manifest = {
        "solution": solution_name,
        "training_mode": mode,
        "base_version": base_version.version_id if base_version else None,
        "solution_config": config.to_manifest(),
        "seed": seed,
        "dataset": {
            "location": features.info.get("dataset_location"),
            "fingerprints": features.info.get("fingerprints", {}),
            "files": features.info.get("files", {}),
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
    }
    return save_solution_version(solution, recipe, features, manifest, keep_full=keep_full_versions)


def describe(version: SolutionVersion) -> dict[str, Any]:
    m = version.manifest
    return {
        "solution_version": m["solution_version"],
        "location": version.location.url,
        "recipe": m["recipe"],
        "training_mode": m.get("training_mode"),
        **m.get("timings", {}),
    }


__all__ = ["SolutionConfig", "train", "describe", "peak_rss_mb"]
