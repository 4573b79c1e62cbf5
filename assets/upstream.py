"""The location of an upstream asset that always records one (featurized data, solution
versions, increments), unlike the validated datasets, which record an absent one."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

from personalize_pipeline.locations import Location, S3Options

from .metadata import upstream_location


def required_upstream(
    context,
    key: dg.AssetKey,
    s3_options: S3Options,
    upstream_paths: dict[str, str] | None = None,
    fallback: Callable[[], Location] | None = None,
) -> Location:
    """``upstream_location`` of an asset that is never absent: a failed step if it recorded no path."""
    location = upstream_location(context, key, s3_options, upstream_paths, fallback)
    if location is None:
        raise dg.Failure(description=f"{key.to_user_string()} recorded no path in this run", allow_retries=False)
    return location
