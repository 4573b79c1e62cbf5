"""Metric attribution (Personalize's metric attributions): what each source brought in.

Interactions may carry ``EVENT_ATTRIBUTION_SOURCE`` (e.g. the solution or campaign whose
recommendation the user acted on, ``"foryou"``, ``"email"``), as in Personalize's
PutEvents and bulk data. ``attribute_metrics(dataset)`` reports, per source, UTC day and
event type, the number of events (Personalize's ``EVENT_COUNT``) and the sum of
EVENT_VALUE (``SUM(EVENT_VALUE)``; missing values count 0). Events without a source are
grouped under ``UNATTRIBUTED``; without an EVENT_TYPE column the type is ``""``.

One pass over the dataset's Arrow slices with ``Table.group_by`` per slice and a final
sum of the partial aggregates: memory is bounded by the number of groups, not events.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .datasets import Dataset
from .errors import InputError
from .markdown_tables import table_markdown

SOURCE = "EVENT_ATTRIBUTION_SOURCE"
UNATTRIBUTED = "UNATTRIBUTED"
COLUMNS = ["source", "day", "event_type", "events", "event_value_sum"]
TABLE_DAYS = 14  # the Markdown table shows the latest days; the CSV and the plot hold every day


def attribute_metrics(dataset: Dataset, slice_rows: int | None = None) -> pd.DataFrame:
    """DataFrame with COLUMNS, one row per (source, day, event type), sorted."""
    names = dataset.column_names
    if SOURCE not in names:
        raise InputError(f"{dataset.source}: no {SOURCE} column; metric attribution needs interactions that carry one")
    parts = []
    for part in dataset.slices(slice_rows) if slice_rows else dataset.slices():
        n = part.num_rows
        source = pc.fill_null(
            pc.if_else(pc.equal(pc.utf8_trim_whitespace(part[SOURCE]), ""), None, part[SOURCE]), UNATTRIBUTED
        )
        seconds = pc.cast(pc.floor(pc.cast(pc.utf8_trim_whitespace(part["TIMESTAMP"]), pa.float64())), pa.int64())
        day = pc.cast(
            pc.multiply(pc.divide(seconds, 86_400), 86_400), pa.int64()
        )  # integer division: start of the UTC day
        etype = pc.fill_null(part["EVENT_TYPE"], "") if "EVENT_TYPE" in names else pa.array([""] * n, pa.string())
        value = (
            pc.fill_null(pc.cast(pc.utf8_trim_whitespace(pc.fill_null(part["EVENT_VALUE"], "0")), pa.float64()), 0.0)
            if "EVENT_VALUE" in names
            else pa.array(np.zeros(n))
        )
        table = pa.table({"source": source, "day": day, "event_type": etype, "value": value})
        parts.append(table.group_by(["source", "day", "event_type"]).aggregate([("value", "count"), ("value", "sum")]))
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    merged = (
        pa.concat_tables(parts)
        .group_by(["source", "day", "event_type"])
        .aggregate([("value_count", "sum"), ("value_sum", "sum")])
    )
    df = merged.to_pandas()
    out = pd.DataFrame(
        {
            "source": df["source"].astype(str),
            "day": pd.to_datetime(df["day"], unit="s", utc=True).dt.strftime("%Y-%m-%d"),
            "event_type": df["event_type"].astype(str),
            "events": df["value_count_sum"].astype(np.int64),
            "event_value_sum": df["value_sum_sum"].astype(np.float64),
        }
    )
    return out.sort_values(["source", "day", "event_type"], kind="stable").reset_index(drop=True)


def totals_by_source(report: pd.DataFrame) -> pd.DataFrame:
    """Events and EVENT_VALUE summed over the days, per source and event type."""
    return report.groupby(["source", "event_type"], as_index=False)[["events", "event_value_sum"]].sum()


def daily_table_markdown(report: pd.DataFrame) -> str:
    """One row per (source, day) of the latest TABLE_DAYS days; per event type its events
    and the sum of EVENT_VALUE."""
    days = sorted(report["day"].unique())
    recent = report[report["day"].isin(days[-TABLE_DAYS:])]
    wide = recent.pivot_table(
        index=["source", "day"], columns="event_type", values=["events", "event_value_sum"], aggfunc="sum", fill_value=0
    )
    rows = []
    for (source, day), values in wide.iterrows():
        row: dict = {"source": source, "day": day}
        for event_type in sorted(recent["event_type"].unique()):
            label = event_type or "(no type)"
            row[f"{label} events"] = int(values[("events", event_type)])
            row[f"{label} value"] = float(values[("event_value_sum", event_type)])
        rows.append(row)
    note = (
        f"The latest {TABLE_DAYS} of {len(days)} days (every day in the CSV at `path`).\n\n"
        if len(days) > TABLE_DAYS
        else ""
    )
    return note + table_markdown(rows)


__all__ = ["attribute_metrics", "totals_by_source", "daily_table_markdown", "SOURCE", "UNATTRIBUTED", "TABLE_DAYS"]
