"""Jobs: weekly FULL retrain (with metrics), the two-hourly UPDATE (no new metrics), and a
validation-only run (what the file sensor starts before there is a FULL version).

FULL and UPDATE carry the tag ``personalize/solution=<name>``; dagster.yaml limits runs per
value of that tag to one, so a FULL and an UPDATE of the same solution never run at once,
nor two FULLs. Each job carries ``dagster/max_runtime`` (personalize.yaml ``runs:``): the
run monitor of the Dagster daemon stops a run that takes longer."""

import dagster as dg

from .settings import settings

SOLUTION_TAG = "personalize/solution"
PIPELINE = dg.AssetSelection.groups("personalize")
VALIDATION = dg.AssetSelection.assets("validated_interactions", "validated_items", "validated_users")


def _tags(job: str, mode: str | None = None) -> dict[str, str]:
    tags = {"dagster/max_runtime": str(int(settings()["runs"]["max_runtime_seconds"][job]))}
    if mode:
        tags.update({SOLUTION_TAG: settings()["solution"]["name"], "personalize/training_mode": mode})
    return tags


full_retrain = dg.define_asset_job(
    "full_retrain",
    selection=PIPELINE,
    description="Validate → featurize → FULL training → metrics → batch inference.",
    config={"ops": {"solution_version": {"config": {"training_mode": "FULL"}}}},
    tags=_tags("full_retrain", "FULL"),
)

update = dg.define_asset_job(
    "update",
    selection=PIPELINE - dg.AssetSelection.assets("solution_metrics"),
    description="Validate → featurize → UPDATE of the latest FULL solution version → batch inference (no new metrics).",
    config={"ops": {"solution_version": {"config": {"training_mode": "UPDATE"}}}},
    tags=_tags("update", "UPDATE"),
)

validate_dataset = dg.define_asset_job(
    "validate_dataset",
    selection=VALIDATION,
    description="Snapshot the dataset files and run the blocking Great Expectations checks only.",
    tags=_tags("validate_dataset"),
)
