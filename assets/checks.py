"""Blocking Great Expectations checks: a failure stops the graph before featurization."""

import dagster as dg

from personalize_pipeline.datasets import load_snapshot
from personalize_pipeline.measure import measured
from personalize_pipeline.validation import validate_datasets

from .datasets import DATASET_TYPES
from .metadata import upstream_location
from .resources import ArtifactStore


def _ge_check(dataset_type: str):
    @dg.asset_check(
        asset=f"validated_{dataset_type}",
        name="great_expectations_suite",
        blocking=True,
        description=(
            f"Great Expectations suite generated from the {dataset_type} schema: required columns, "
            "types, non-null ids, TIMESTAMP range and Amazon Personalize minimums."
        ),
    )
    def _check(context: dg.AssetCheckExecutionContext, artifact_store: ArtifactStore) -> dg.AssetCheckResult:
        location = upstream_location(context, dg.AssetKey(f"validated_{dataset_type}"), artifact_store.s3.options())
        if location is None:
            return dg.AssetCheckResult(passed=True, description=f"no {dataset_type} dataset (optional)")
        with measured() as stage:
            dataset = load_snapshot(location)
            report = validate_datasets([dataset], dataset.source)
        return validation_result(report, stage)

    return _check


def validation_result(report, stage) -> dg.AssetCheckResult:
    """A GE validation report as a blocking check's result: the first failure as its
    description, every failure and warning, the full report and the timings as metadata."""
    failures = report.failures
    return dg.AssetCheckResult(
        passed=report.success,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(failures[0].message() if failures else report.summary()),
        metadata={
            "summary": report.summary(),
            "rules": len(report.results),
            "failed_rules": len(failures),
            "warnings": len(report.warnings),
            "failures": dg.MetadataValue.md(
                "\n".join(f"- {r.message()}" for r in failures + report.warnings) or "none"
            ),
            "report": dg.MetadataValue.md(report.to_markdown()),
            "validation_seconds": report.seconds,
            **stage.as_dict(),
        },
    )


ge_checks = [_ge_check(t) for t in DATASET_TYPES]
