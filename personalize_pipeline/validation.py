"""Validation of a dataset group with Great Expectations 1.x suites built from the schemas.

For every dataset three kinds of batch are validated:
- ``raw``: the file as read (every column a string): columns present (or exactly the schema
  columns when a schema file exists), ids and required fields not null, numeric and
  boolean fields parse, ids unique in items/users, Personalize's minimum row count.
- ``typed``: TIMESTAMP / CREATION_TIMESTAMP are epoch seconds in a plausible range (catches
  milliseconds and future dates).
- ``user_history`` (interactions): Personalize needs at least 25 users with 2+ interactions.

Column rules run on slices of ``SLICE_ROWS`` rows converted from the Arrow table one at a
time (bounded pandas copies; results summed per rule), so memory stays flat with size.

The report names the file, column and rule, with counts and example values and lines.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .datasets import Dataset, DatasetGroup
from .schemas import INTEGER_TYPES, NUMERIC_TYPES, REQUIRED_FIELDS

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

MIN_INTERACTIONS = 1000
MIN_USERS_WITH_TWO_INTERACTIONS = 25
EARLIEST_TIMESTAMP = 0  # epoch seconds; negative values are invalid
FUTURE_SLACK_SECONDS = 86_400
# Python's \s spelled out as a class of the characters themselves: pandas then runs the
# rules with Arrow's RE2 engine (it falls back to a per-value Python loop for \s).
_WS = "[" + "".join(map(chr, (*range(0x9, 0xE), *range(0x1C, 0x21), 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000))) + "]"
INT_REGEX = "^" + _WS + r"*[-+]?\d+" + _WS + "*$"
FLOAT_REGEX = "^" + _WS + r"*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?" + _WS + "*$"
BOOL_REGEX = r"^(?i:true|false|0|1)$"
EXAMPLES = 3


@dataclass
class RuleResult:
    """One expectation's outcome, in words a user can act on."""

    dataset: str
    source: str
    rule: str  # GE expectation type
    column: str | None
    description: str  # what must hold
    success: bool
    unexpected_count: int | None = None
    element_count: int | None = None
    examples: list[Any] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    observed: Any = None
    error: str | None = None
    severity: str = "error"  # "warning": reported, does not fail validation

    def message(self) -> str:
        where = f"{self.source}: " + (f"column {self.column}: " if self.column else "")
        if self.success:
            return f"{where}ok: {self.description}"
        if self.severity == "warning":
            where = "warning: " + where
        if self.error:
            return f"{where}{self.description}: could not be checked ({self.error})"
        text = f"{where}{self.description}: failed"
        if self.unexpected_count is not None and self.element_count:
            pct = 100.0 * self.unexpected_count / self.element_count
            text += f" for {self.unexpected_count} of {self.element_count} rows ({pct:.2f}%)"
        if self.examples:
            pairs = [
                f"line {ln}: {_show(v)}" if ln is not None else _show(v)
                for v, ln in zip(self.examples, self.lines + [None] * len(self.examples))
            ]
            text += ", e.g. " + "; ".join(pairs)
        elif self.observed is not None:
            text += f" (observed {self.observed})"
        return text


@dataclass
class ValidationReport:
    location: str
    results: list[RuleResult]
    row_counts: dict[str, int]
    seconds: float

    @property
    def success(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[RuleResult]:
        return [r for r in self.results if not r.success and r.severity == "error"]

    @property
    def warnings(self) -> list[RuleResult]:
        return [r for r in self.results if not r.success and r.severity == "warning"]

    def for_dataset(self, dataset_type: str) -> "ValidationReport":
        return ValidationReport(
            self.location,
            [r for r in self.results if r.dataset == dataset_type],
            {k: v for k, v in self.row_counts.items() if k == dataset_type},
            self.seconds,
        )

    def summary(self) -> str:
        n, bad = len(self.results), len(self.failures)
        state = "PASSED" if self.success else "FAILED"
        return f"validation {state}: {n - bad} of {n} rules passed for {self.location}"

    def to_text(self) -> str:
        lines = [self.summary()]
        lines += [f"  FAIL {r.message()}" for r in self.failures]
        lines += [f"  WARN {r.message()}" for r in self.warnings]
        return "\n".join(lines)

    def to_markdown(self) -> str:
        rows = ["| dataset | column | rule | result | unexpected | examples |", "|---|---|---|---|---|---|"]
        for r in self.results:
            unexpected = "" if r.unexpected_count is None else f"{r.unexpected_count} / {r.element_count}"
            examples = ", ".join(repr(v) for v in r.examples) if r.examples else ("" if r.observed is None else f"observed {r.observed}")
            rows.append(
                f"| {r.dataset} | {r.column or ''} | {r.description} | {'pass' if r.success else ('warn' if r.severity == 'warning' else '**FAIL**')} | {unexpected} | {examples.replace('|', '&#124;')} |"
            )
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "success": self.success,
            "row_counts": self.row_counts,
            "seconds": self.seconds,
            "results": [asdict(r) for r in self.results],
        }


@dataclass
class _Rule:
    expectation: Any
    description: str
    column: str | None
    severity: str = "error"
    order: int = 0  # position in the report


@dataclass
class _Batch:
    """Rules run on a sequence of frames (slices of one table); per-rule results are
    summed over the frames. Frame indexes are row numbers of the whole table."""

    dataset: Dataset
    name: str
    frames: Callable[[], Iterator[pd.DataFrame]]
    rules: list[_Rule]
    line_offset: int | None  # file line of row 0, for messages (None: no line numbers)


TABLE_RULES = ("ExpectTableColumnsToMatchSet", "ExpectColumnToExist")
SLICE_ROWS = 1_000_000  # rows per pandas frame handed to Great Expectations


def _slices(table: pa.Table, columns: list[str], rows: int | None = None) -> Callable[[], Iterator[pd.DataFrame]]:
    """Frames of ``columns`` over consecutive row ranges (bounded pandas conversions)."""
    size = rows or SLICE_ROWS

    def frames() -> Iterator[pd.DataFrame]:
        for offset in range(0, max(table.num_rows, 1), size):
            frame = table.select(columns).slice(offset, size).to_pandas()
            frame.index = pd.RangeIndex(offset, offset + len(frame))
            yield frame

    return frames


def _as_number(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """float64 of the values that are numbers (FLOAT_REGEX), missing for the rest."""
    ok = pc.fill_null(pc.match_substring_regex(column, FLOAT_REGEX), False)
    return pc.cast(pc.if_else(ok, pc.utf8_trim_whitespace(column), pa.scalar(None, pa.string())), pa.float64())


def build_batches(dataset: Dataset, now: float | None = None, slice_rows: int | None = None) -> list[_Batch]:
    """The GE expectations for one dataset, generated from its schema.

    Column rules run on slices of ``slice_rows`` rows (default ``SLICE_ROWS``); table
    rules on the header and on the row count; uniqueness on the whole id column."""
    import great_expectations as gx

    E = gx.expectations
    schema = dataset.schema
    table = dataset.table
    present = set(table.column_names)
    required = REQUIRED_FIELDS[dataset.dataset_type]
    rules: list[_Rule] = []
    if schema.from_file:
        rules.append(
            _Rule(
                E.ExpectTableColumnsToMatchSet(column_set=schema.names, exact_match=True),
                "columns match the schema file " + ", ".join(schema.names),
                None,
            )
        )
    for name in required:
        rules.append(_Rule(E.ExpectColumnToExist(column=name), f"required column {name} is present", name))
    for f in schema.fields:
        if f.name not in present:
            continue
        if f.name in required or not f.nullable:
            rules.append(_Rule(E.ExpectColumnValuesToNotBeNull(column=f.name), "has no empty values", f.name))
        if f.type in INTEGER_TYPES:
            rules.append(_Rule(E.ExpectColumnValuesToMatchRegex(column=f.name, regex=INT_REGEX), f"values are integers ({f.type})", f.name))
        elif f.type in NUMERIC_TYPES:
            rules.append(_Rule(E.ExpectColumnValuesToMatchRegex(column=f.name, regex=FLOAT_REGEX), f"values are numbers ({f.type})", f.name))
        elif f.type == "boolean":
            rules.append(_Rule(E.ExpectColumnValuesToMatchRegex(column=f.name, regex=BOOL_REGEX), "values are true or false", f.name))
    id_column = {"items": "ITEM_ID", "users": "USER_ID"}.get(dataset.dataset_type)
    if id_column and id_column in present:
        rules.append(_Rule(
                E.ExpectColumnValuesToBeUnique(column=id_column),
                "ids are unique (for repeated ids the last row is used)",
                id_column,
                severity="warning",
            ))
    if dataset.dataset_type == "interactions":
        rules.append(
            _Rule(
                E.ExpectTableRowCountToBeBetween(min_value=MIN_INTERACTIONS),
                f"at least {MIN_INTERACTIONS} interactions (Amazon Personalize minimum)",
                None,
            )
        )
    for i, rule in enumerate(rules):
        rule.order = i
    line_offset = 2 if dataset.source.endswith((".csv", ".csv.gz")) else None
    kind = {r.order: r.expectation.__class__.__name__ for r in rules}
    header = [r for r in rules if kind[r.order] in TABLE_RULES]
    count = [r for r in rules if kind[r.order] == "ExpectTableRowCountToBeBetween"]
    unique = [r for r in rules if kind[r.order] == "ExpectColumnValuesToBeUnique"]
    per_row = [r for r in rules if r not in header and r not in count and r not in unique]
    n = table.num_rows
    batches = []
    if header:
        batches.append(_Batch(dataset, "header", lambda: iter([table.slice(0, 0).to_pandas()]), header, line_offset))
    if per_row:
        columns = sorted({r.column for r in per_row}, key=table.column_names.index)
        batches.append(_Batch(dataset, "raw", _slices(table, columns, rows=slice_rows), per_row, line_offset))
    if unique:
        batches.append(_Batch(dataset, "unique", _slices(table, [id_column], rows=max(n, 1)), unique, line_offset))
    if count:
        batches.append(_Batch(dataset, "row_count", lambda: iter([pd.DataFrame({"row": np.zeros(n, dtype=np.int8)})]), count, None))

    now = time.time() if now is None else now
    latest = int(now + FUTURE_SLACK_SECONDS)
    typed_rules: list[_Rule] = []
    typed_cols = []
    for name in ("TIMESTAMP", "CREATION_TIMESTAMP"):
        if name in present and name in schema:
            typed_cols.append(name)
            typed_rules.append(
                _Rule(
                    E.ExpectColumnValuesToBeBetween(column=name, min_value=EARLIEST_TIMESTAMP, max_value=latest),
                    "is a Unix time in seconds, not in the future (milliseconds are too large)",
                    name,
                    order=len(rules) + len(typed_rules),
                )
            )
    if typed_rules:
        numbers = pa.table({name: _as_number(table[name]) for name in typed_cols})
        batches.append(_Batch(dataset, "typed", _slices(numbers, typed_cols, rows=slice_rows), typed_rules, line_offset))

    if dataset.dataset_type == "interactions" and "USER_ID" in present:
        counts = pc.value_counts(table["USER_ID"])
        values, frequencies = counts.field("values"), counts.field("counts")
        repeat = values.filter(pc.and_(pc.is_valid(values), pc.greater_equal(frequencies, 2)))
        frame = pd.DataFrame({"USER_ID": repeat.to_pandas()})
        batches.append(
            _Batch(
                dataset,
                "user_history",
                lambda: iter([frame]),
                [
                    _Rule(
                        E.ExpectTableRowCountToBeBetween(min_value=MIN_USERS_WITH_TWO_INTERACTIONS),
                        f"at least {MIN_USERS_WITH_TWO_INTERACTIONS} users with 2 or more interactions (Amazon Personalize minimum)",
                        None,
                        order=len(rules) + len(typed_rules),
                    )
                ],
                None,
            )
        )
    return batches


def validate(group: DatasetGroup, dataset_types: tuple[str, ...] | None = None, now: float | None = None) -> ValidationReport:
    """Run the generated suites on the dataset group (or only the named datasets)."""
    datasets = [d for d in group.datasets() if dataset_types is None or d.dataset_type in dataset_types]
    return validate_datasets(datasets, group.location, now=now)


def validate_datasets(datasets: list[Dataset], location: str, now: float | None = None, slice_rows: int | None = None) -> ValidationReport:
    start = time.perf_counter()
    results: list[RuleResult] = []
    context = _context()
    for dataset in datasets:
        found: list[tuple[int, RuleResult]] = []
        for i, batch in enumerate(build_batches(dataset, now=now, slice_rows=slice_rows)):
            found += _run_batch(context, batch, f"{dataset.dataset_type}_{batch.name}_{i}")
        results += [r for _, r in sorted(found, key=lambda pair: pair[0])]
    return ValidationReport(
        location,
        results,
        {d.dataset_type: d.num_rows for d in datasets},
        round(time.perf_counter() - start, 3),
    )


def _context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in ("great_expectations", "great_expectations.core", "great_expectations.data_context"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # GE fingerprints every in-memory dataframe under 1 GB by hashing all its rows (as slow
    # as the rules themselves); the fingerprint only labels the batch, so it is turned off.
    from great_expectations.execution_engine import pandas_execution_engine

    pandas_execution_engine.HASH_THRESHOLD = 0
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _run_batch(context, batch: _Batch, name: str) -> list[tuple[int, RuleResult]]:
    """Run the batch's suite on each of its frames; sum the per-frame outcomes."""
    import great_expectations as gx

    source = context.data_sources.add_pandas(f"src_{name}")
    asset = source.add_dataframe_asset(name)
    definition = asset.add_batch_definition_whole_dataframe("whole")
    suite = context.suites.add(gx.ExpectationSuite(name=f"suite_{name}"))
    by_id = {}
    for rule in batch.rules:
        by_id[suite.add_expectation(rule.expectation).id] = rule
    vd = context.validation_definitions.add(gx.ValidationDefinition(name=f"vd_{name}", data=definition, suite=suite))
    merged: dict[int, RuleResult] = {}
    for frame in batch.frames():
        run = vd.run(
            batch_parameters={"dataframe": frame},
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES},
        )
        for res in run.results:
            spec = by_id[res.expectation_config.id]
            result = _rule_result(batch, spec, res)
            merged[spec.order] = _merge(merged[spec.order], result) if spec.order in merged else result
    return sorted(merged.items(), key=lambda pair: pair[0])


def _rule_result(batch: _Batch, spec: _Rule, res) -> RuleResult:
    info = res.result or {}
    examples = list(info.get("partial_unexpected_list") or [])[:EXAMPLES]
    index = list(info.get("partial_unexpected_index_list") or [])[:EXAMPLES]
    lines = [int(i) + batch.line_offset for i in index] if batch.line_offset is not None else []
    exc = res.exception_info or {}
    error = exc.get("exception_message") if exc.get("raised_exception") else None
    observed = info.get("observed_value")
    if spec.expectation.__class__.__name__ == "ExpectTableColumnsToMatchSet" and not res.success:
        mismatch = (info.get("details") or {}).get("mismatched") or {}
        observed = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in mismatch.items()) or observed
    return RuleResult(
        dataset=batch.dataset.dataset_type,
        source=batch.dataset.source,
        rule=res.expectation_config.type,
        column=spec.column,
        description=spec.description,
        success=bool(res.success),
        unexpected_count=info.get("unexpected_count"),
        element_count=info.get("element_count"),
        examples=[_plain(v) for v in examples],
        lines=lines,
        observed=_plain(observed),
        error=error.splitlines()[0] if error else None,
        severity=spec.severity,
    )


def _merge(a: RuleResult, b: RuleResult) -> RuleResult:
    """One rule's outcome over two consecutive slices of the same table."""

    def total(x: int | None, y: int | None) -> int | None:
        return None if x is None and y is None else (x or 0) + (y or 0)

    return RuleResult(
        dataset=a.dataset,
        source=a.source,
        rule=a.rule,
        column=a.column,
        description=a.description,
        success=a.success and b.success,
        unexpected_count=total(a.unexpected_count, b.unexpected_count),
        element_count=total(a.element_count, b.element_count),
        examples=(a.examples + b.examples)[:EXAMPLES],
        lines=(a.lines + b.lines)[:EXAMPLES],
        observed=b.observed if b.observed is not None else a.observed,
        error=a.error or b.error,
        severity=a.severity,
    )


def _show(value: Any) -> str:
    return "(empty)" if value is None else repr(value)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN: a missing value
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    try:
        return value.item()
    except AttributeError:
        return str(value)
