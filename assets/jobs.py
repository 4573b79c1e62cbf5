"""Jobs: weekly FULL retrain (with metrics) and the two-hourly UPDATE (no new metrics).

Both carry the tag ``personalize/solution=<name>``; dagster.yaml limits runs per value of
that tag to one, so a FULL and an UPDATE of the same solution never run at once."""

from __future__ import annotations

import dagster as dg

from .settings import settings

SOLUTION_TAG = "personalize/solution"
PIPELINE = dg.AssetSelection.groups("personalize")


def _tags(mode: str) -> dict[str, str]:
    return {SOLUTION_TAG: settings()["solution"]["name"], "personalize/training_mode": mode}


full_retrain = dg.define_asset_job(
    "full_retrain",
    selection=PIPELINE,
    description="Validate → featurize → FULL training → metrics → batch inference.",
    config={"ops": {"solution_version": {"config": {"training_mode": "FULL"}}}},
    tags=_tags("FULL"),
)

update = dg.define_asset_job(
    "update",
    selection=PIPELINE - dg.AssetSelection.assets("solution_metrics"),
    description="Validate → featurize → UPDATE of the latest FULL solution version → batch inference (no new metrics).",
    config={"ops": {"solution_version": {"config": {"training_mode": "UPDATE"}}}},
    tags=_tags("UPDATE"),
)
