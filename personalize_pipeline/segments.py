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

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .batch_handlers import BatchHandler, Served
from .batch_requests import JobSettings, ParsedLine, SegmentRequest, decode_object, parse_segment_request
from .errors import InputError
from .filters import Filter, FilterContext, parse_filter
from .recipes import UserSegmenter
from .store import SolutionVersion

MAX_SEGMENT_USERS = 5_000_000
CHUNK = 1024
PREFIX = "INCLUDE ItemID WHERE "  # an itemAttributes condition is a filter's WHERE part


def parse_segment_line(text: str, lineno: int, key: str) -> ParsedLine[SegmentRequest]:
    """(input object, the request, error) of one input line; ``key`` is "itemId" or "itemAttributes"."""
    obj, error = decode_object(text, lineno)
    if obj is None:
        return ParsedLine(None, None, error)
    return parse_segment_request(obj, lineno, key)


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


class SegmentHandler(BatchHandler[SegmentRequest, UserSegmenter]):
    """USER_SEGMENTATION: ``{"itemId"}`` or ``{"itemAttributes"}`` → the recipe's users."""

    recipe_type = "USER_SEGMENTATION"
    interface = UserSegmenter
    max_results = MAX_SEGMENT_USERS
    chunk_size = CHUNK

    def __init__(self, version: SolutionVersion, settings: JobSettings) -> None:
        super().__init__(version, settings)
        if not 1 <= int(settings.num_results) <= MAX_SEGMENT_USERS:
            raise InputError(
                f"numResults must be between 1 and {MAX_SEGMENT_USERS:,} users for a batch segment job, "
                f"got {settings.num_results}"
            )
        if settings.filter_expression:
            raise InputError("filters are not supported in batch segment jobs yet; run the job without --filter")
        self.key = self.recipe.segment_input
        self.k = min(int(settings.num_results), len(version.user_ids))
        self.encoded_users = np.array([json.dumps(str(u), ensure_ascii=False) for u in version.user_ids], dtype=object)
        self.attributes = AttributeQueries(version) if self.key == "itemAttributes" else None
        self.item_index = pd.Index(np.asarray(version.item_ids, dtype=object))
        self.item_index.get_indexer(self.item_index[:1])  # its hash table, built before the threads share it

    @classmethod
    def default_input(cls, version: SolutionVersion) -> tuple[str, str]:
        """Every item, or every categorical item attribute value (:func:`default_segment_input`)."""
        return "all-segments.jsonl", default_segment_input(version)

    def parse(self, text: str, lineno: int) -> ParsedLine[SegmentRequest]:
        return parse_segment_line(text, lineno, self.key)

    def serve(self, requests: list[SegmentRequest]) -> Served:
        served = Served()
        columns, positions = self.score(requests, served.errors)
        if positions:
            served.blocks.append((positions, self.render([requests[pos] for pos in positions], columns)))
        return served

    def score(self, requests: list[SegmentRequest], errors: dict[int, str]) -> tuple[list[np.ndarray], list[int]]:
        """The query item codes of each request that has some (errors by position for the others)."""
        columns: list[np.ndarray] = []
        positions: list[int] = []
        if self.attributes is None:
            codes = self.item_index.get_indexer(pd.Index(np.array([r.query for r in requests], dtype=object)))
        for pos, request in enumerate(requests):
            if self.attributes is None:
                if codes[pos] < 0:
                    errors[pos] = (
                        f"line {request.line}: unknown itemId {request.query!r} "
                        "(not in this solution version's catalogue)"
                    )
                    continue
                columns.append(codes[pos : pos + 1].astype(np.int64))
            else:
                mask = self.attributes.mask(request.query)
                if isinstance(mask, str):
                    errors[pos] = f"line {request.line}: {mask}"
                    continue
                columns.append(np.flatnonzero(mask))
            positions.append(pos)
        return columns, positions

    def render(self, requests: list[SegmentRequest], columns: list[np.ndarray]) -> bytes:
        """Output lines: the users list (JSON items, comma-separated) of each query."""
        lengths = np.array([len(c) for c in columns])
        queries = sp.csr_matrix(
            (
                np.ones(int(lengths.sum()), np.float32),
                (np.concatenate(columns), np.repeat(np.arange(len(columns)), lengths)),
            ),
            shape=(len(self.version.item_ids), len(columns)),
        )
        users, _scores = self.recipe.segments(queries, self.k)
        return "".join(
            '{"input": '
            + json.dumps(request.input, ensure_ascii=False)
            + ', "output": {"usersList": ['
            + ", ".join(self.encoded_users[row[row >= 0]])
            + ']}, "error": null}\n'
            for request, row in zip(requests, users, strict=True)
        ).encode("utf-8")


def default_segment_input(version: SolutionVersion) -> str:
    """The input of a scheduled segment job without one: every item (aws-item-affinity), or
    one ``ITEMS.F = "value"`` line per value of each categorical Items field
    (aws-item-attribute-affinity; numeric fields have no natural values to list)."""
    recipe = version.recipe
    if not isinstance(recipe, UserSegmenter):
        raise InputError(
            f"{version.manifest['recipe']} is not a USER_SEGMENTATION recipe: it takes no segment job input"
        )
    if recipe.segment_input == "itemId":
        return "".join(json.dumps({"itemId": str(i)}, ensure_ascii=False) + "\n" for i in version.item_ids)
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
    return "".join(lines)


__all__ = [
    "parse_segment_line",
    "AttributeQueries",
    "SegmentHandler",
    "default_segment_input",
    "MAX_SEGMENT_USERS",
]
