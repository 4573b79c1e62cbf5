"""Metric attribution (Personalize's metric attributions): a shared asset that reports, per
EVENT_ATTRIBUTION_SOURCE and UTC day, the events and the sum of EVENT_VALUE by event type,
so a team sees what each solution's recommendations (or a campaign, an email) brought in.

It reads the interactions where they are delivered (the DatasetSource resource: every file,
folders of increments too) with ``personalize_pipeline.attribution``, writes the whole
report as CSV to ``<artifacts>/attribution/<run id>/metric_attribution.csv`` and shows the
latest days as a table, a plot of all days, and float totals per source (charted across
runs). Interactions without an EVENT_ATTRIBUTION_SOURCE column materialize with a note.
Its own job, ``attribute_metrics``, so the file sensor's validation runs stay as cheap
as they were."""

import dagster as dg

from personalize_pipeline.attribution import SOURCE, attribute_metrics, daily_table_markdown, totals_by_source
from personalize_pipeline.datasets import read_interactions
from personalize_pipeline.measure import measured

from .datasets import DATASET_GROUP
from .metadata import CODE_VERSION, retry_policy, step_failure_on_bad_input
from .plots import attribution_by_day
from .resources import ArtifactStore, DatasetSource

MAX_SOURCE_METADATA = 50  # float totals for the sources with the most events


@dg.asset(
    deps=["raw_interactions"],
    group_name=DATASET_GROUP,
    code_version=CODE_VERSION,
    retry_policy=retry_policy(),
    kinds={"pandas", "csv"},
    description=(
        f"Per {SOURCE} and UTC day: the events and the sum of EVENT_VALUE by event type (Personalize's "
        "metric attribution: EVENT_COUNT and SUM(EVENT_VALUE)), as a table, a plot and totals per source."
    ),
)
def metric_attribution(
    context: dg.AssetExecutionContext, dataset_source: DatasetSource, artifact_store: ArtifactStore
) -> dg.MaterializeResult:
    with measured() as stage:
        with step_failure_on_bad_input():
            interactions = read_interactions(dataset_source.root())
            if SOURCE not in interactions.column_names:
                return dg.MaterializeResult(
                    metadata={
                        "present": False,
                        "source": dg.MetadataValue.path(interactions.source),
                        "note": dg.MetadataValue.md(
                            f"The interactions have no `{SOURCE}` column: nothing to attribute. Add one (e.g. the "
                            "solution or campaign a recommendation came from) to see what each source brought in."
                        ),
                    }
                )
            report = attribute_metrics(interactions)
        location = artifact_store.root().child("attribution", context.run.run_id, "metric_attribution.csv")
        location.write_text(report.to_csv(index=False))
    context.log.info(f"metric attribution: {len(report)} rows (source, day, event type) → {location.url}")
    totals = (
        totals_by_source(report)
        .groupby("source")[["events", "event_value_sum"]]
        .sum()
        .sort_values("events", ascending=False)
    )
    per_source = {}
    for source, row in totals.head(MAX_SOURCE_METADATA).iterrows():
        per_source[f"events/{source}"] = dg.MetadataValue.float(float(row["events"]))
        per_source[f"event_value_sum/{source}"] = dg.MetadataValue.float(float(row["event_value_sum"]))
    return dg.MaterializeResult(
        metadata={
            "present": True,
            "path": dg.MetadataValue.path(location.url),
            "source": dg.MetadataValue.path(interactions.source),
            "sources": len(totals),
            "days": int(report["day"].nunique()),
            "events": int(report["events"].sum()),
            "by_source_and_day": dg.MetadataValue.md(daily_table_markdown(report)),
            "plot": attribution_by_day(report),
            **per_source,
            **stage.as_dict(),
        }
    )


metric_attribution_job = dg.define_asset_job(
    "attribute_metrics",
    selection=dg.AssetSelection.assets(metric_attribution),
    description=f"Events and the sum of EVENT_VALUE per {SOURCE}, day and event type, from the delivered interactions.",
)
