"""Batch inference jobs in Amazon Personalize's JSONL format.

Input: one JSON object per line — ``{"userId": ...}`` for USER_PERSONALIZATION solutions.
Output: ``<output>/<input file name>.out`` with one line per input line::

    {"input": {...}, "output": {"recommendedItems": [...], "scores": [...]}, "error": null}

A bad line (invalid JSON, missing or wrong keys) gets ``"output": null`` and a message in
``"error"``; the job goes on. Users the model does not know get the most popular items.
Users are scored in chunks (matrix of scores → top-k), so memory stays bounded; the output
is written to a temporary name and moved into place, so a failed job leaves no ``.out``
that looks complete.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .errors import InputError
from .locations import Location, as_location
from .store import SolutionVersion, load_solution_version

MAX_RESULTS = 500
CHUNK = 8192


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


def parse_line(text: str, lineno: int, recipe_type: str) -> tuple[dict | None, str | None, str | None]:
    """(input object, userId, error) for one input line."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, None, f"line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(obj, dict):
        return None, None, f"line {lineno}: expected a JSON object"
    if recipe_type == "USER_PERSONALIZATION":
        if "itemList" in obj:
            return obj, None, f"line {lineno}: itemList is for PERSONALIZED_RANKING solutions; this solution is USER_PERSONALIZATION"
        user = obj.get("userId")
        if user is None:
            return obj, None, f"line {lineno}: missing key \"userId\""
        if not isinstance(user, (str, int)) or isinstance(user, bool) or str(user) == "":
            return obj, None, f"line {lineno}: \"userId\" must be a non-empty string"
        return obj, str(user), None
    return obj, None, f"line {lineno}: recipe type {recipe_type} is not supported by batch inference yet"


def _read_lines(input_loc: Location) -> Iterator[str]:
    with input_loc.open("rb") as fh:
        for raw in fh:
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
) -> BatchResult:
    start = time.perf_counter()
    if not 1 <= int(num_results) <= MAX_RESULTS:
        raise InputError(f"numResults must be between 1 and {MAX_RESULTS}, got {num_results}")
    if filter_expression:
        raise InputError("filters are not supported in this version yet")
    version = solution if isinstance(solution, SolutionVersion) else load_solution_version(solution)
    if exploration_weight is not None and not 0.0 <= exploration_weight <= 1.0:
        raise InputError(f"explorationWeight must be between 0 and 1, got {exploration_weight}")
    in_loc = as_location(input_path)
    out_dir = as_location(output_dir)
    if not in_loc.exists():
        raise InputError(f"{in_loc.url}: batch input file does not exist")
    if in_loc.is_dir():
        raise InputError(f"{in_loc.url}: is a folder; give a JSONL file")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir.url}: output location is a file, not a folder")
    out_loc = out_dir.child(in_loc.name + ".out")

    records: list[tuple[dict | None, str | None, str | None, str]] = []
    for lineno, text in enumerate(_read_lines(in_loc), start=1):
        if not text.strip():
            continue
        obj, user, error = parse_line(text, lineno, version.recipe_type)
        records.append((obj, user, error, text))
    if not records:
        raise InputError(f"{in_loc.url}: batch input has no lines")
    out_dir.makedirs()  # only now: a rejected job leaves no new output folder behind

    ok_rows = [i for i, r in enumerate(records) if r[2] is None]
    user_ids = np.array([records[i][1] for i in ok_rows], dtype=object)
    codes = version.user_codes(user_ids) if len(user_ids) else np.zeros(0, dtype=np.int64)
    k = min(int(num_results), len(version.item_ids))
    # JSON text of every item id, encoded once per job; lines are assembled from pieces
    # instead of json.dumps of nested dicts per user (several times faster).
    encoded_items = np.array([json.dumps(str(i), ensure_ascii=False) for i in version.item_ids], dtype=object)
    rendered: dict[int, str] = {}
    for s in range(0, len(ok_rows), CHUNK):
        chunk_codes = codes[s : s + CHUNK]
        items, scores = version.recipe.recommend(version.user_batch(chunk_codes), k)
        valid = items >= 0
        names = encoded_items[np.where(valid, items, 0)].tolist()
        values = np.round(np.where(valid, scores, 0.0).astype(np.float64), 7).tolist()
        all_valid = bool(valid.all())
        for j in range(len(chunk_codes)):
            row_names, row_values = names[j], values[j]
            if not all_valid:
                n_valid = int(valid[j].sum())  # invalid entries (-1) only pad the end
                row_names, row_values = row_names[:n_valid], row_values[:n_valid]
            rendered[ok_rows[s + j]] = (
                '{"recommendedItems": [' + ", ".join(row_names) + '], "scores": [' + ", ".join(map(repr, row_values)) + "]}"
            )
    errors = 0
    with out_loc.atomic_writer() as fh:
        for i, (obj, _user, error, text) in enumerate(records):
            if error is None:
                line = '{"input": ' + json.dumps(obj, ensure_ascii=False) + ', "output": ' + rendered[i] + ', "error": null}'
            else:
                errors += 1
                line = json.dumps({"input": obj if obj is not None else text, "output": None, "error": error}, ensure_ascii=False)
            fh.write((line + "\n").encode("utf-8"))
    return BatchResult(
        output=out_loc.url,
        lines=len(records),
        errors=errors,
        users_scored=len(ok_rows),
        unknown_users=int((codes < 0).sum()),
        seconds=round(time.perf_counter() - start, 4),
    )


def write_all_users_input(version: SolutionVersion, location: str | Location) -> Location:
    """A job input naming every user known to the solution version (for scheduled runs)."""
    loc = as_location(location)
    text = "".join(json.dumps({"userId": str(u)}) + "\n" for u in version.user_ids)
    loc.write_text(text)
    return loc


__all__ = ["run_batch_job", "BatchResult", "write_all_users_input", "parse_line"]
