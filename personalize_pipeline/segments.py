"""Batch segment jobs (Personalize's CreateBatchSegmentJob) for USER_SEGMENTATION solutions.

Input: one JSON object per line — ``{"itemId": "..."}`` for aws-item-affinity,
``{"itemAttributes": "ITEMS.GENRES = \\"Comedy\\" AND ITEMS.PRICE > 10"}`` for
aws-item-attribute-affinity. Output: ``<output>/<input file name>.out``, one line per input
line::

    {"input": {...}, "output": {"usersList": ["u1", "u2", ...]}, "error": null}

``num_results`` users per line (1 to 5,000,000, Personalize's limit; at most the number of
users the solution version knows). An item attribute condition is Personalize's
``itemAttributes`` syntax, which is the WHERE part of a filter expression over ``Items``
fields: it is parsed and evaluated by :mod:`personalize_pipeline.filters` (as
``INCLUDE ItemID WHERE <condition>``), so ``=``, ``IN``, ``NOT IN``, comparisons,
``BETWEEN``, ``AND`` / ``OR`` and parentheses work as they do in filters; ``Users``,
``Interactions`` and ``$PARAMETER`` references are refused on that line.

A bad line (invalid JSON, missing key, unknown item, an attribute condition that does not
parse or matches no item) gets ``"output": null`` and its message in ``"error"``; the job
goes on. The output is written to a temporary name and moved into place.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import InputError
from .filters import Filter, FilterContext, parse_filter
from .locations import Location, as_location
from .store import SolutionVersion

MAX_SEGMENT_USERS = 5_000_000
CHUNK = 1024
PREFIX = "INCLUDE ItemID WHERE "  # an itemAttributes condition is a filter's WHERE part


def parse_segment_line(text: str, lineno: int, key: str) -> tuple[Any, str | None, str | None]:
    """(input object, the itemId / itemAttributes string, error) of one input line."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, None, f"line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(obj, dict):
        return None, None, f"line {lineno}: expected a JSON object"
    other = "itemAttributes" if key == "itemId" else "itemId"
    if key not in obj:
        hint = f' ("{other}" is for the other segmentation recipe)' if other in obj else ""
        return obj, None, f'line {lineno}: missing key "{key}"{hint}'
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        return obj, None, f'line {lineno}: "{key}" must be a non-empty string'
    return obj, str(value), None


class AttributeQueries:
    """Item masks of ``itemAttributes`` conditions, parsed once per distinct text."""

    def __init__(self, version: SolutionVersion):
        self.context = FilterContext.from_history(
            version.item_ids,
            version.items_metadata,
            version.user_ids,
            None,
            np.zeros(len(version.user_ids) + 1, np.int64),
            np.zeros(0, np.int64),
        )
        self.cache: dict[str, np.ndarray | str] = {}

    def mask(self, condition: str) -> np.ndarray | str:
        """bool [n_items] of the items matching ``condition``, or the error message."""
        if condition not in self.cache:
            try:
                self.cache[condition] = self._evaluate(condition)
            except InputError as exc:
                self.cache[condition] = exc.message
        return self.cache[condition]

    def _evaluate(self, condition: str) -> np.ndarray:
        try:
            parsed: Filter = parse_filter(PREFIX + condition)
        except InputError as exc:  # positions in the condition as written
            message = re.sub(
                r"^filter expression: position (\d+)",
                lambda m: f"itemAttributes: position {max(1, int(m.group(1)) - len(PREFIX))}",
                exc.message,
            )
            raise InputError(message) from None
        other = sorted(f for f in parsed.fields if not f.startswith("Items."))
        if other:
            raise InputError(f"itemAttributes may only use Items fields, not {other[0]}")
        if parsed.parameters:
            raise InputError(f"itemAttributes cannot use parameters (${sorted(parsed.parameters)[0]})")
        parsed.check(self.context)
        mask = parsed.mask(self.context, np.array([-1]))[0]
        if not mask.any():
            raise InputError("no item matches itemAttributes")
        return mask


def run_segment_job(
    version: SolutionVersion,
    input_path: str | Location,
    output_dir: str | Location,
    num_results: int = 25,
    filter_expression: str | None = None,
):
    """Run a batch segment job; returns batch.BatchResult (users_scored = lines served)."""
    from .batch import BatchResult, _chunked, _read_lines

    start = time.perf_counter()
    if not 1 <= int(num_results) <= MAX_SEGMENT_USERS:
        raise InputError(
            f"numResults must be between 1 and {MAX_SEGMENT_USERS:,} users for a batch segment job, got {num_results}"
        )
    if filter_expression:
        raise InputError("filters are not supported in batch segment jobs yet; run the job without --filter")
    in_loc, out_dir = as_location(input_path), as_location(output_dir)
    if not in_loc.exists():
        raise InputError(f"{in_loc.url}: batch input file does not exist")
    if in_loc.is_dir():
        raise InputError(f"{in_loc.url}: is a folder; give a JSONL file")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir.url}: output location is a file, not a folder")
    out_loc = out_dir.child(in_loc.name + ".out")
    model = version.recipe
    key = model.segment_input  # type: ignore[attr-defined]  # TODO(issue 19): UserSegmenter declares it
    k = min(int(num_results), len(version.user_ids))
    encoded_users = np.array([json.dumps(str(u), ensure_ascii=False) for u in version.user_ids], dtype=object)
    attributes = AttributeQueries(version) if key == "itemAttributes" else None
    totals = {"lines": 0, "errors": 0}

    def process(chunk: list[tuple[int, str]]) -> list[str]:
        records = [list(parse_segment_line(text, lineno, key)) + [text] for lineno, text in chunk]
        columns: list[np.ndarray] = []
        rows: list[int] = []
        for i, (_obj, value, error, _text) in enumerate(records):
            if error is not None:
                continue
            if attributes is None:
                code = int(version.item_codes(np.array([value], dtype=object))[0])
                if code < 0:
                    records[i][2] = (
                        f"line {chunk[i][0]}: unknown itemId {value!r} (not in this solution version's catalogue)"
                    )
                    continue
                columns.append(np.array([code]))
            else:
                mask = attributes.mask(value)
                if isinstance(mask, str):
                    records[i][2] = f"line {chunk[i][0]}: {mask}"
                    continue
                columns.append(np.flatnonzero(mask))
            rows.append(i)
        rendered = _render(model, version, columns, k, encoded_users)
        lines = []
        served = dict(zip(rows, rendered, strict=True))
        for i, (obj, _value, error, text) in enumerate(records):
            if error is None:
                lines.append(
                    '{"input": '
                    + json.dumps(obj, ensure_ascii=False)
                    + ', "output": {"usersList": ['
                    + served[i]
                    + ']}, "error": null}'
                )
            else:
                totals["errors"] += 1
                lines.append(
                    json.dumps(
                        {"input": obj if obj is not None else text, "output": None, "error": error}, ensure_ascii=False
                    )
                )
        totals["lines"] += len(records)
        return lines

    chunks: Iterator[list[tuple[int, str]]] = _chunked(_read_lines(in_loc), CHUNK)
    first = next(chunks, None)
    if first is None:
        raise InputError(f"{in_loc.url}: batch input has no lines")
    first_lines = process(first)
    with out_loc.atomic_writer() as fh:
        fh.write(("\n".join(first_lines) + "\n").encode("utf-8"))
        for chunk in chunks:
            fh.write(("\n".join(process(chunk)) + "\n").encode("utf-8"))
    return BatchResult(
        out_loc.url,
        totals["lines"],
        totals["errors"],
        totals["lines"] - totals["errors"],
        0,
        round(time.perf_counter() - start, 4),
    )


def _render(model, version: SolutionVersion, columns: list[np.ndarray], k: int, encoded_users: np.ndarray) -> list[str]:
    """The users list (JSON items, comma-separated) of each query (item codes per query)."""
    if not columns:
        return []
    lengths = np.array([len(c) for c in columns])
    queries = sp.csr_matrix(
        (
            np.ones(int(lengths.sum()), np.float32),
            (np.concatenate(columns), np.repeat(np.arange(len(columns)), lengths)),
        ),
        shape=(len(version.item_ids), len(columns)),
    )
    users, _scores = model.segments(queries, k)
    return [", ".join(encoded_users[row[row >= 0]]) for row in users]


def write_default_segment_input(version: SolutionVersion, location: str | Location) -> Location:
    """The input of a scheduled segment job without one: every item (aws-item-affinity), or
    one ``ITEMS.F = "value"`` line per value of each categorical Items field
    (aws-item-attribute-affinity; numeric fields have no natural values to list)."""
    loc = as_location(location)
    if version.recipe.segment_input == "itemId":  # type: ignore[attr-defined]  # TODO(issue 19): as above
        loc.write_text("".join(json.dumps({"itemId": str(i)}, ensure_ascii=False) + "\n" for i in version.item_ids))
        return loc
    catalog = version.items_metadata if version.items_metadata is not None else pd.DataFrame()
    lines = []
    for column in [c for c in catalog.columns if c not in ("ITEM_ID", "CREATION_TIMESTAMP")]:
        values = catalog[column].dropna()
        if values.empty or pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        for value in sorted(set(values.astype(str).str.split("|").explode().str.strip()) - {""}):
            condition = f"ITEMS.{column} = " + json.dumps(value, ensure_ascii=False)
            lines.append(json.dumps({"itemAttributes": condition}, ensure_ascii=False) + "\n")
    if not lines:
        raise InputError(
            "aws-item-attribute-affinity needs a batch input: the Items dataset has no categorical field to list "
            "segments of"
        )
    loc.write_text("".join(lines))
    return loc


__all__ = [
    "run_segment_job",
    "parse_segment_line",
    "AttributeQueries",
    "write_default_segment_input",
    "MAX_SEGMENT_USERS",
]
