"""Batch inference jobs in Amazon Personalize's JSONL format.

Input: one JSON object per line — ``{"userId": ...}`` for USER_PERSONALIZATION solutions,
``{"userId": ..., "itemList": [...]}`` (at most 500 items) for PERSONALIZED_RANKING and
``{"itemId": ...}`` for RELATED_ITEMS. Output: ``<output>/<input file name>.out`` with one line per input line::

    {"input": {...}, "output": {"recommendedItems": [...], "scores": [...]}, "error": null}

A bad line (invalid JSON, missing or wrong keys) gets ``"output": null`` and a message in
``"error"``; the job goes on. Users the model does not know get the most popular items.
The input is streamed: lines are read, scored (matrix of scores → top-k) and written in
chunks, so memory stays bounded for millions of lines; the output is written to a
temporary name and moved into place, so a failed job leaves no ``.out`` that looks
complete.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError
from .filters import FilterContext, parse_filter
from .locations import Location, as_location
from .recipes.scoring import resolve_device
from .rendering import input_json, json_text, render_top_line, render_top_lines, renderable, text_table
from .store import SolutionVersion, load_solution_version

MAX_RESULTS = 500
CHUNK = 8192
IN_FLIGHT = 2  # chunks processed at once (memory: two chunks)
RENDER_BLOCK = 2048  # lines rendered in one byte matrix


@dataclass
class BatchResult:
    output: str
    lines: int
    errors: int
    users_scored: int
    unknown_users: int
    seconds: float

    @property
    def users_per_second(self) -> float:
        return round(self.users_scored / self.seconds, 1) if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "users_per_second": self.users_per_second}


def _id(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        return None
    return str(value)


def parse_line(text: str, lineno: int, recipe_type: str) -> tuple[dict | None, Any, str | None]:
    """(input object, request key, error) for one input line. The key is the userId
    (USER_PERSONALIZATION), (userId, [itemIds]) (PERSONALIZED_RANKING) or the itemId
    (RELATED_ITEMS)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, None, f"line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(obj, dict):
        return None, None, f"line {lineno}: expected a JSON object"
    if recipe_type == "RELATED_ITEMS":
        if "itemId" not in obj:
            return obj, None, f'line {lineno}: missing key "itemId" (this solution is RELATED_ITEMS)'
        item = _id(obj["itemId"])
        if item is None:
            return obj, None, f'line {lineno}: "itemId" must be a non-empty string'
        return obj, item, None
    if recipe_type == "USER_PERSONALIZATION" and "itemList" in obj:
        return (
            obj,
            None,
            f"line {lineno}: itemList is for PERSONALIZED_RANKING solutions; this solution is USER_PERSONALIZATION",
        )
    if "userId" not in obj:
        return obj, None, f'line {lineno}: missing key "userId"'
    user = _id(obj["userId"])
    if user is None:
        return obj, None, f'line {lineno}: "userId" must be a non-empty string'
    if recipe_type == "USER_PERSONALIZATION":
        return obj, user, None
    if recipe_type == "PERSONALIZED_RANKING":
        items = obj.get("itemList")
        if not isinstance(items, list) or not items:
            return obj, None, f'line {lineno}: "itemList" must be a non-empty list of item ids'
        if len(items) > MAX_RESULTS:
            return obj, None, f'line {lineno}: "itemList" has {len(items)} items; at most {MAX_RESULTS} are allowed'
        ids = [_id(i) for i in items]
        if any(i is None for i in ids):
            return obj, None, f'line {lineno}: "itemList" must contain only non-empty item ids'
        return obj, (user, ids), None
    return obj, None, f"line {lineno}: recipe type {recipe_type} is not supported by batch inference"


def _read_lines(input_loc: Location) -> Iterator[str]:
    with input_loc.open("rb") as fh:
        for lineno, raw in enumerate(fh):
            if lineno == 0 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark
                raw = raw[3:]
            yield raw.decode("utf-8", errors="replace").rstrip("\r\n")


def run_batch_job(
    solution: str | Location | SolutionVersion,
    input_path: str | Location,
    output_dir: str | Location,
    num_results: int = 25,
    filter_expression: str | None = None,
    filter_values: dict[str, Any] | None = None,
    exploration_weight: float | None = None,
    exploration_item_age_cut_off: float | None = None,
    device: str | None = None,
) -> BatchResult:
    """Run one batch inference job; ``device`` (auto, cpu or cuda) is where the neural
    recipes score (auto: a GPU when torch sees one)."""
    start = time.perf_counter()
    version = solution if isinstance(solution, SolutionVersion) else load_solution_version(solution)
    if version.recipe_type == "USER_SEGMENTATION":  # batch segment job (segments.py)
        from .segments import run_segment_job

        return run_segment_job(version, input_path, output_dir, num_results, filter_expression)
    if not 1 <= int(num_results) <= MAX_RESULTS:
        raise InputError(f"numResults must be between 1 and {MAX_RESULTS}, got {num_results}")
    parsed_filter = parse_filter(filter_expression) if filter_expression else None
    filter_context = None
    if parsed_filter is not None:
        filter_context = FilterContext.from_history(
            version.item_ids,
            version.items_metadata,
            version.user_ids,
            version.users_metadata,
            *version.filter_history(),
        )
        parsed_filter.check(filter_context)  # unknown fields fail the job before any output
    exploration = exploration_config(version, exploration_weight, exploration_item_age_cut_off)
    in_loc = as_location(input_path)
    out_dir = as_location(output_dir)
    if not in_loc.exists():
        raise InputError(f"{in_loc.url}: batch input file does not exist")
    if in_loc.is_dir():
        raise InputError(f"{in_loc.url}: is a folder; give a JSONL file")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir.url}: output location is a file, not a folder")
    out_loc = out_dir.child(in_loc.name + ".out")

    k = min(int(num_results), len(version.item_ids))
    # JSON text of every item id, encoded once per job, as a padded byte table: output lines
    # are rendered a block at a time (see rendering.py), not per element
    encoded_items = np.array([json_text(str(i)) for i in version.item_ids], dtype=object)
    scoring = _JobScoring(version, k, encoded_items, parsed_filter, filter_context, exploration, resolve_device(device))
    totals = {"lines": 0, "errors": 0, "scored": 0, "unknown": 0}
    totals_lock = threading.Lock()  # chunks are processed on two threads

    def process(chunk: list[tuple[int, str]]) -> bytes:
        """Parse, score and render one chunk of input lines (bounded memory)."""
        records = [(*parse_line(text, lineno, version.recipe_type), text) for lineno, text in chunk]
        ok_rows = [i for i, r in enumerate(records) if r[2] is None]
        rendered: dict[int, bytes] = {}
        # requests grouped by their filter values (a line's "filterValues" overrides the job's)
        groups: dict[str, list[int]] = {}
        group_values: dict[str, dict | None] = {}
        for i in ok_rows:
            values = records[i][0].get("filterValues", filter_values) if parsed_filter is not None else None
            if values is not None and not isinstance(values, dict):
                obj, key, _error, text = records[i]
                records[i] = (
                    obj,
                    key,
                    f'line {chunk[i][0]}: "filterValues" must be a JSON object of parameter names to values',
                    text,
                )
                continue
            key = (
                json.dumps(values, sort_keys=True) if values is not None else "null"
            )  # no dumps per line without filters
            groups.setdefault(key, []).append(i)
            group_values[key] = values
        unknown = 0
        for key, rows in groups.items():
            try:
                unknown += scoring.score(
                    rendered, rows, [records[i][1] for i in rows], [records[i][0] for i in rows], group_values[key]
                )
            except InputError as exc:  # e.g. a line's filterValues lacks a placeholder
                if key == json.dumps(filter_values, sort_keys=True):
                    raise
                for i in rows:
                    obj, user, _error, text = records[i]
                    records[i] = (obj, user, f"line {chunk[i][0]}: {exc.message}", text)
        errors = [i for i, r in enumerate(records) if r[2] is not None]
        with totals_lock:
            totals["lines"] += len(records)
            totals["errors"] += len(errors)
            totals["scored"] += len(records) - len(errors)
            totals["unknown"] += unknown
        if not errors and len(rendered) == 1:  # one block of every line, in order
            return rendered[0][1]
        lines = dict(_split_blocks(rendered))
        for i in errors:
            obj, _key, error, text = records[i]
            lines[i] = (
                json.dumps(
                    {"input": obj if obj is not None else text, "output": None, "error": error}, ensure_ascii=False
                )
                + "\n"
            ).encode("utf-8")
        return b"".join(lines[i] for i in range(len(records)))

    chunks = _chunked(_read_lines(in_loc), CHUNK)
    first = next(chunks, None)
    if first is None:
        raise InputError(f"{in_loc.url}: batch input has no lines")
    first_lines = process(first)  # job-level problems surface before any output exists
    with out_loc.atomic_writer() as fh:  # creates the output folder only now
        fh.write(first_lines)
        for rendered_chunk in _overlapped(process, chunks):
            fh.write(rendered_chunk)
    return BatchResult(
        output=out_loc.url,
        lines=totals["lines"],
        errors=totals["errors"],
        users_scored=totals["scored"],
        unknown_users=totals["unknown"],
        seconds=round(time.perf_counter() - start, 4),
    )


def _overlapped(process, chunks: Iterator[list[tuple[int, str]]]) -> Iterator[bytes]:
    """``process(chunk)`` of each chunk, in order, with the next chunk already under way on a
    second thread: torch and numpy release the GIL, so one chunk's product and top-k overlap
    the other's JSON parsing and rendering. At most ``IN_FLIGHT`` chunks are held at once."""
    with ThreadPoolExecutor(max_workers=IN_FLIGHT, thread_name_prefix="batch") as pool:
        pending: deque[Future] = deque()
        for chunk in chunks:
            pending.append(pool.submit(process, chunk))
            if len(pending) >= IN_FLIGHT:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _chunked(lines: Iterator[str], size: int) -> Iterator[list[tuple[int, str]]]:
    """Non-empty input lines with their line numbers, ``size`` at a time."""
    chunk: list[tuple[int, str]] = []
    for lineno, text in enumerate(lines, start=1):
        if text.strip():
            chunk.append((lineno, text))
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def exploration_config(version: SolutionVersion, weight: float | None, age_cut_off: float | None):
    """The job's ``itemExplorationConfig``: values checked first, Personalize's defaults
    (0.3, 30 days) where not given; None for recipes that do not explore, and an error when
    it is given for one of those."""
    from .recipes import ExplorationConfig

    default = ExplorationConfig()
    config = ExplorationConfig(
        weight=default.weight if weight is None else float(weight),
        item_age_cut_off=default.item_age_cut_off if age_cut_off is None else float(age_cut_off),
    )
    if getattr(version.recipe, "supports_exploration", False):
        return config
    if weight is not None or age_cut_off is not None:
        raise InputError(
            f"itemExplorationConfig (exploration weight / item age cut-off) applies to aws-user-personalization solutions; "
            f"this solution version uses {version.manifest['recipe']}"
        )
    return None


class _JobScoring:
    """What scoring a job's chunks needs, built once per job: the id indexes, the rendered
    item ids, the filter, exploration and the compute device."""

    def __init__(
        self,
        version: SolutionVersion,
        k: int,
        encoded_items: np.ndarray,
        parsed_filter,
        filter_context,
        exploration,
        device,
    ) -> None:
        self.version, self.k, self.encoded_items = version, k, encoded_items
        self.item_table = text_table(encoded_items.tolist())
        self.parsed_filter, self.filter_context, self.exploration = parsed_filter, filter_context, exploration
        self.options: dict[str, Any] = {"exploration": exploration} if exploration is not None else {}
        if hasattr(version.recipe, "linear_scorer"):  # the neural recipes score on the job's device
            self.options["device"] = device
        self.user_index = pd.Index(np.asarray(version.user_ids, dtype=object))  # not rebuilt per chunk
        self.user_index.get_indexer(self.user_index[:1])  # its hash table, built once before the threads share it

    def score(
        self, rendered: dict[int, tuple[list[int], bytes]], rows: list[int], keys: list, inputs: list, values
    ) -> int:
        """Score and render one group of requests into ``rendered``; returns how many were unknown."""
        version, parsed_filter = self.version, self.parsed_filter
        kind = version.recipe_type
        if kind == "RELATED_ITEMS":
            codes = version.item_codes(np.array(keys, dtype=object))
            allowed = (
                parsed_filter.mask(self.filter_context, np.full(len(codes), -1), values) if parsed_filter else None
            )
            items, scores = version.recipe.related(codes, self.k, allowed=allowed)
        elif kind == "PERSONALIZED_RANKING":
            codes = self.user_index.get_indexer(pd.Index(np.array([u for u, _ in keys], dtype=object)))
            allowed = parsed_filter.mask(self.filter_context, codes, values) if parsed_filter else None
            lines = _render_ranking(keys, codes, version, allowed, [input_json(o) for o in inputs])
            rendered[rows[0]] = (rows, "".join(line + "\n" for line in lines).encode("utf-8"))
            return int((codes < 0).sum())
        else:
            codes = self.user_index.get_indexer(pd.Index(np.array(keys, dtype=object)))
            allowed = parsed_filter.mask(self.filter_context, codes, values) if parsed_filter else None
            items, scores = version.recipe.recommend(version.user_batch(codes), self.k, allowed=allowed, **self.options)
        input_texts = [input_json(o) for o in inputs]
        if renderable(items, scores):
            blob = b"".join(
                render_top_lines(
                    input_texts[lo : lo + RENDER_BLOCK],
                    items[lo : lo + RENDER_BLOCK],
                    scores[lo : lo + RENDER_BLOCK],
                    self.item_table,
                )
                for lo in range(0, len(rows), RENDER_BLOCK)
            )
        else:  # e.g. scores outside [0, 1] from a custom recipe: the per-element way
            blob = "".join(
                _render_top_row(t, i, s, self.encoded_items) + "\n" for t, i, s in zip(input_texts, items, scores)
            ).encode("utf-8")
        rendered[rows[0]] = (rows, blob)
        return int((codes < 0).sum())


def _split_blocks(rendered: dict[int, tuple[list[int], bytes]]) -> Iterator[tuple[int, bytes]]:
    """(row, its output line) of every rendered block; lines end in a newline, which JSON
    text never holds unescaped."""
    for rows, blob in rendered.values():
        for row, line in zip(rows, blob.split(b"\n")):
            yield row, line + b"\n"


def _render_top_row(input_text: str, items: np.ndarray, scores: np.ndarray, encoded_items: np.ndarray) -> str:
    valid = items >= 0  # invalid entries (-1) only pad the end
    return render_top_line(input_text, encoded_items[items[valid]].tolist(), scores[valid].tolist())


def _render_ranking(
    keys: list, user_codes: np.ndarray, version: SolutionVersion, allowed: np.ndarray | None, input_texts: list[str]
) -> list[str]:
    """Reorder each itemList; unknown items go last, in input order, with a null score;
    items a filter excludes are left out."""
    width = max(len(ids) for _, ids in keys)
    flat = np.array([i for _, ids in keys for i in ids], dtype=object)
    lengths = np.array([len(ids) for _, ids in keys])
    codes_flat = version.item_codes(flat)
    lists = np.full((len(keys), width), -1, dtype=np.int64)
    mask = np.arange(width)[None, :] < lengths[:, None]
    lists[mask] = codes_flat
    if allowed is not None:
        blocked = (lists >= 0) & ~np.take_along_axis(allowed, np.maximum(lists, 0), axis=1)
        lists[blocked] = -2  # ranked as unknown, then dropped below
    order, scores = version.recipe.rank(version.user_batch(user_codes), lists)
    names = np.full((len(keys), width), None, dtype=object)
    names[mask] = [json.dumps(i, ensure_ascii=False) for i in flat]
    lines = []
    for j, input_text in enumerate(input_texts):
        n = lengths[j]
        keep = (order[j] < n) & (lists[j][order[j]] != -2)  # drop padding and filtered items
        pos = order[j][keep]
        row_scores = scores[j][keep]
        ranked = [names[j][p] for p in pos]
        values = ["null" if np.isnan(v) else repr(round(float(v), 7)) for v in row_scores]
        output = '{"recommendedItems": [' + ", ".join(ranked) + '], "scores": [' + ", ".join(values) + "]}"
        lines.append('{"input": ' + input_text + ', "output": ' + output + ', "error": null}')
    return lines


def write_all_users_input(version: SolutionVersion, location: str | Location) -> Location:
    """A job input naming every user known to the solution version (for scheduled runs)."""
    loc = as_location(location)
    text = "".join(json.dumps({"userId": str(u)}) + "\n" for u in version.user_ids)
    loc.write_text(text)
    return loc


__all__ = ["run_batch_job", "BatchResult", "write_all_users_input", "parse_line"]
