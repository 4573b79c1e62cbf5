"""Small helpers that turn engine objects into Dagster metadata, and find the upstream
outputs of this run."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg

from personalize_pipeline import __version__
from personalize_pipeline.datasets import Dataset
from personalize_pipeline.errors import InputError
from personalize_pipeline.locations import Location

from .settings import settings

CODE_VERSION = __version__  # on every asset: a new release marks materializations stale


def retry_policy() -> dg.RetryPolicy:
    """Retries with exponential backoff and jitter for the steps that touch storage. Bad
    input is not retried (``step_failure_on_bad_input``); an unreachable S3 endpoint or a
    server error is."""
    spec = settings().runs.retries
    return dg.RetryPolicy(
        max_retries=spec.max_retries,
        delay=spec.delay_seconds,
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


@contextlib.contextmanager
def step_failure_on_bad_input() -> Iterator[None]:
    """Turn the engine's one-line InputError into a failed step carrying that line; only
    transient storage errors (``StorageUnavailable``) let the retry policy try again."""
    try:
        yield
    except InputError as exc:
        raise dg.Failure(description=exc.message, allow_retries=bool(getattr(exc, "transient", False))) from None


class ReadsUpstream(dg.Config):
    """Run config shared by the assets that read an upstream snapshot: where to find an
    upstream that this run does not materialize (asset key as the UI writes it, e.g.
    ``validated_items`` or ``foryou/solution_version`` → folder or s3:// path)."""

    upstream_paths: dict[str, str] = {}


def run_materialization(context, key: dg.AssetKey) -> dg.AssetMaterialization | None:
    """The materialization of ``key`` recorded by this run (or, for a re-execution, by the
    run it re-executes), read from the instance's event log; None when there is none."""
    instance, run = context.instance, context.run
    seen: set[str] = set()
    while run is not None and run.run_id not in seen:
        seen.add(run.run_id)
        for entry in reversed(instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)):
            if entry.asset_materialization is not None and entry.asset_materialization.asset_key == key:
                return entry.asset_materialization
        run = instance.get_run_by_id(run.parent_run_id) if run.parent_run_id else None
    return None


def upstream_location(
    context,
    key: dg.AssetKey,
    s3_options,
    upstream_paths: dict[str, str] | None = None,
    fallback: Callable[[], Location] | None = None,
) -> Location | None:
    """The ``path`` an upstream asset recorded when THIS run materialized it (None when it
    recorded that its dataset is absent); else the path the run config names for it; else
    ``fallback()`` (e.g. the solution store's latest version); else a failed step. Never
    "the latest materialization anywhere": another run's snapshot may be one whose blocking
    check failed."""
    materialization = run_materialization(context, key)
    if materialization is not None:
        path = materialization.metadata.get("path")
        return Location(str(path.value), s3_options) if path is not None else None
    name = key.to_user_string()
    if upstream_paths and name in upstream_paths:
        return Location(upstream_paths[name], s3_options)
    if fallback is not None:
        return fallback()
    raise dg.Failure(
        description=(
            f"{name} was not materialized in this run: include it in the run's selection, or name its path "
            f"under upstream_paths in this asset's run config"
        ),
        allow_retries=False,
    )


def column_schema(dataset: Dataset) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                f.name,
                f.type,
                description=("categorical" if f.categorical else None),
                constraints=dg.TableColumnConstraints(nullable=f.nullable),
            )
            for f in dataset.schema.fields
        ]
    )


def floats(values: dict[str, Any], prefix: str = "") -> dict[str, dg.MetadataValue]:
    """Numeric metadata as floats, so that the UI charts them across runs."""
    return {
        f"{prefix}{k}": dg.MetadataValue.float(float(v))
        for k, v in values.items()
        if isinstance(v, (int, float)) and v is not None
    }
