"""Markdown tables of plain rows, as the Dagster UI (and any notebook) shows them: metrics,
HPO trials, AutoML candidates, per-segment breakdowns."""

from __future__ import annotations

from typing import Any


def table_markdown(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of ``rows`` (columns: the first row's keys); floats to 4 decimals."""
    if not rows:
        return "(empty)"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(out)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "&#124;")


def segments_markdown(segments: dict, baseline: dict) -> str:
    """One table per segment family (rows of metrics per segment), each float metric next
    to the popularity baseline's value for the same segment."""
    parts = []
    for family, rows in segments.items():
        base = {r["segment"]: r for r in baseline.get(family, [])}
        table = []
        for row in rows:
            merged = dict(row)
            for key, value in row.items():
                if isinstance(value, float):
                    merged[f"popularity {key}"] = base.get(row["segment"], {}).get(key)
            table.append(merged)
        parts.append(f"**{family.replace('_', ' ')}** (K = 10)\n\n" + table_markdown(table))
    return "\n\n".join(parts) or "(none)"


__all__ = ["table_markdown", "segments_markdown"]
