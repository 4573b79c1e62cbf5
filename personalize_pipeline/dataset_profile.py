"""A data profile of one dataset as a Markdown table: per column its type, the share of
non-null values, the number of distinct values and a summary (min / median / max for numbers,
the most frequent values otherwise). The Dagster layer shows it on the validated datasets."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .datasets import Dataset

PROFILE_ROWS = 1_000_000  # larger datasets are profiled on their first rows (bounded memory)


def profile_markdown(dataset: Dataset, max_columns: int = 30, max_rows: int = PROFILE_ROWS) -> str:
    """A data profile: per column non-null share, distinct values and a summary."""
    df = dataset.typed(max_rows=max_rows)
    rows = ["| column | type | non-null | distinct | summary |", "|---|---|---|---|---|"]
    if len(df) < dataset.num_rows:
        rows.insert(0, f"Profile of the first {len(df):,} of {dataset.num_rows:,} rows.\n")
    n = max(len(df), 1)
    for f in dataset.schema.fields[:max_columns]:
        if f.name not in df.columns:
            rows.append(f"| {f.name} | {f.type} | missing | | |")
            continue
        col = df[f.name]
        non_null = int(col.notna().sum())
        distinct = int(col.nunique(dropna=True))
        if pd.api.types.is_numeric_dtype(col) and non_null:
            values = col.dropna().to_numpy(dtype=np.float64)
            summary = f"min {values.min():.6g}, median {np.median(values):.6g}, max {values.max():.6g}"
        else:
            top = col.value_counts().head(3)
            summary = ", ".join(f"{str(v)[:24]} ({c})" for v, c in top.items())
        rows.append(
            f"| {f.name} | {f.type} | {100.0 * non_null / n:.1f}% | {distinct} | {summary.replace('|', '&#124;')} |"
        )
    return "\n".join(rows)


__all__ = ["PROFILE_ROWS", "profile_markdown"]
