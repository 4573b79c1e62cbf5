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
complete. What a line means and how it is scored and rendered is the business of the
recipe type's handler (:data:`HANDLERS`, :mod:`.batch_handlers`; batch segment jobs for
USER_SEGMENTATION solutions: :mod:`.segments`); this module drives it, two chunks at once.
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

import torch

from .batch_handlers import (
    MAX_RESULTS,
    BatchHandler,
    RankingHandler,
    RelatedItemsHandler,
    UserRecommendationHandler,
)
from .batch_requests import JobSettings, parse_line
from .errors import InputError
from .locations import Location, as_location
from .segments import SegmentHandler
from .store import SolutionVersion, load_solution_version

CHUNK = 8192
READ_BYTES = 1 << 20  # input read per block
FIRST_CHUNK = 1024  # processed alone (before any output exists): small, so the overlap starts soon
IN_FLIGHT = 2  # chunks processed at once (memory: two chunks)

# recipe type -> the handler of its batch jobs (parse -> score -> render)
HANDLERS: dict[str, type[BatchHandler]] = {
    handler.recipe_type: handler
    for handler in (UserRecommendationHandler, RankingHandler, RelatedItemsHandler, SegmentHandler)
}


@dataclass
class BatchResult:
    output: str
    lines: int
    errors: int
    users_scored: int
    unknown_users: int
    seconds: float  # the whole job
    startup_seconds: float = 0.0  # of which: loading the version, building the handler, warming it up

    @property
    def users_per_second(self) -> float:
        """Throughput net of start-up: users scored per second of reading, scoring and writing."""
        net = self.seconds - self.startup_seconds
        return round(self.users_scored / net, 1) if net > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "users_per_second": self.users_per_second}


def handler_class(recipe_type: str) -> type[BatchHandler]:
    """The batch handler class of ``recipe_type``."""
    handler = HANDLERS.get(recipe_type)
    if handler is None:
        raise InputError(f"recipe type {recipe_type} is not supported by batch inference")
    return handler


def handler_for(version: SolutionVersion, settings: JobSettings) -> BatchHandler:
    """The batch handler of the version's recipe type, with the job's settings checked."""
    return handler_class(version.recipe.recipe_type)(version, settings)


def _line_blocks(input_loc: Location) -> Iterator[list[str]]:
    """The input's lines, ``READ_BYTES`` at a time: decoded as UTF-8 (bad bytes replaced),
    line ends (\\n, \\r\\n) dropped, a leading byte order mark too. One decode and one split
    per block, no Python work per line."""
    with input_loc.open("rb") as fh:
        # read1: what is there, up to READ_BYTES (a pipe or FIFO is not waited on until a
        # whole block has come)
        read = getattr(fh, "read1", fh.read)
        head = b""
        while len(head) < 3:  # the whole byte order mark, if any
            more = read(READ_BYTES)
            if not more:
                break
            head += more
        if head.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark
            head = head[3:]
        partial: list[bytes] = []  # the start of a line that goes on in the next read
        data = head
        while True:
            cut = data.rfind(b"\n") + 1
            if cut:
                yield _split_lines(b"".join([*partial, data[:cut]]))
                partial = []
            partial.append(data[cut:])
            data = read(READ_BYTES)
            if not data:
                break
        if any(partial):
            yield _split_lines(b"".join(partial) + b"\n")


def _split_lines(data: bytes) -> list[str]:
    """The lines of ``data`` (bytes ending in \\n), decoded, without their line ends."""
    lines = data.decode("utf-8", errors="replace").split("\n")[:-1]
    return [line.rstrip("\r") for line in lines] if b"\r" in data else lines


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
    scoring_precision: str | None = None,
) -> BatchResult:
    """Run one batch inference job (a batch segment job for USER_SEGMENTATION solutions);
    ``device`` (auto, cpu or cuda) is where the neural recipes score (auto: a GPU when torch
    sees one); ``scoring_precision`` (float32, the default, or bf16) how they score on a CPU
    (see :mod:`.recipes.scoring`)."""
    start = time.perf_counter()
    version = solution if isinstance(solution, SolutionVersion) else load_solution_version(solution)
    settings = JobSettings(
        num_results,
        filter_expression,
        filter_values,
        exploration_weight,
        exploration_item_age_cut_off,
        device,
        scoring_precision,
    )
    handler = handler_for(version, settings)  # job-level problems surface before any output exists
    in_loc, out_loc = _job_locations(input_path, output_dir)
    handler.warm_up()
    startup = time.perf_counter() - start
    totals = {"lines": 0, "errors": 0, "unknown": 0}
    totals_lock = threading.Lock()  # chunks are processed on two threads

    def process(chunk: list[tuple[int, str]]) -> bytes:
        lines, errors, unknown = _process_chunk(handler, chunk)
        with totals_lock:
            totals["lines"] += len(chunk)
            totals["errors"] += errors
            totals["unknown"] += unknown
        return lines

    chunks = _chunked(_line_blocks(in_loc), handler.chunk_size or CHUNK, FIRST_CHUNK)
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
        users_scored=totals["lines"] - totals["errors"],
        unknown_users=totals["unknown"],
        seconds=round(time.perf_counter() - start, 4),
        startup_seconds=round(startup, 4),
    )


def _job_locations(input_path: str | Location, output_dir: str | Location) -> tuple[Location, Location]:
    """The input file and ``<output>/<input name>.out``, checked."""
    in_loc, out_dir = as_location(input_path), as_location(output_dir)
    if not in_loc.exists():
        raise InputError(f"{in_loc.url}: batch input file does not exist")
    if in_loc.is_dir():
        raise InputError(f"{in_loc.url}: is a folder; give a JSONL file")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir.url}: output location is a file, not a folder")
    return in_loc, out_dir.child(in_loc.name + ".out")


def _process_chunk(handler: BatchHandler, chunk: list[tuple[int, str]]) -> tuple[bytes, int, int]:
    """Parse, score and render one chunk of input lines (bounded memory): (its output lines,
    how many are errors, how many requests named an unknown user or item)."""
    plain = handler.serve_plain([text for _, text in chunk])
    if plain is not None:
        return plain[0], 0, plain[1]
    parsed = [handler.parse(text, lineno) for lineno, text in chunk]
    ok = [i for i, line in enumerate(parsed) if line.request is not None]
    served = handler.serve([parsed[i].request for i in ok])
    errors = {i: line.error for i, line in enumerate(parsed) if line.error is not None}
    errors.update({ok[pos]: error for pos, error in served.errors.items()})
    if not errors and len(served.blocks) == 1:  # one block of every line, in order
        return served.blocks[0][1], 0, served.unknown
    lines = {ok[pos]: line for pos, line in _split_blocks(served.blocks)}
    for i, error in errors.items():
        obj = parsed[i].input
        lines[i] = (
            json.dumps(
                {"input": obj if obj is not None else chunk[i][1], "output": None, "error": error}, ensure_ascii=False
            )
            + "\n"
        ).encode("utf-8")
    return b"".join(lines[i] for i in range(len(chunk))), len(errors), served.unknown


def _overlapped(process, chunks: Iterator[list[tuple[int, str]]]) -> Iterator[bytes]:
    """``process(chunk)`` of each chunk, in order, with the next chunk already under way on a
    second thread: torch and numpy release the GIL, so one chunk's product and top-k overlap
    the other's JSON parsing and rendering. At most ``IN_FLIGHT`` chunks are held at once;
    the workers share the process's torch threads (two chunks with two threads each on two
    cores would spin-wait for each other)."""
    threads = max(1, torch.get_num_threads() // IN_FLIGHT)
    with ThreadPoolExecutor(
        max_workers=IN_FLIGHT, thread_name_prefix="batch", initializer=torch.set_num_threads, initargs=(threads,)
    ) as pool:
        pending: deque[Future] = deque()
        for chunk in chunks:
            pending.append(pool.submit(process, chunk))
            if len(pending) >= IN_FLIGHT:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _chunked(blocks: Iterator[list[str]], size: int, first: int | None = None) -> Iterator[list[tuple[int, str]]]:
    """Non-empty input lines with their line numbers, ``size`` at a time (the first chunk
    ``first`` lines where that is smaller)."""
    chunk: list[tuple[int, str]] = []
    limit, lineno = min(size, first or size), 0
    for lines in blocks:
        chunk.extend((i, text) for i, text in enumerate(lines, start=lineno + 1) if text.strip())
        lineno += len(lines)
        while len(chunk) >= limit:
            yield chunk[:limit]
            chunk, limit = chunk[limit:], size
    if chunk:
        yield chunk


def _split_blocks(blocks: list[tuple[list[int], bytes]]) -> Iterator[tuple[int, bytes]]:
    """(position, its output line) of every rendered block; lines end in a newline, which JSON
    text never holds unescaped."""
    for positions, blob in blocks:
        # the blob ends in a newline, so the split has one more (empty) piece than positions
        for pos, line in zip(positions, blob.split(b"\n"), strict=False):
            yield pos, line + b"\n"


__all__ = [
    "run_batch_job",
    "BatchResult",
    "parse_line",
    "handler_for",
    "handler_class",
    "HANDLERS",
    "MAX_RESULTS",
]
