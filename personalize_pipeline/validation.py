"""Validation of a dataset group with Great Expectations 1.x suites built from the schemas.

For every dataset three kinds of batch are validated:
- ``raw``: the file as read (every column a string): columns present (or exactly the schema
  columns when a schema file exists), ids and required fields not null, numeric and
  boolean fields parse, ids unique in items/users, Personalize's minimum row count.
- ``typed``: TIMESTAMP / CREATION_TIMESTAMP are epoch seconds in a plausible range (catches
  milliseconds and future dates).
- ``user_history`` (interactions): Personalize needs at least 25 users with 2+ interactions.

Column rules run on the dataset's slices (``Dataset.slices``: a streamed file is read
slice by slice) converted to pandas one at a time, results summed per rule, so memory
stays flat with size; the table rules and the per-user count run once.

The report names the file, column and rule, with counts and example values and lines.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .datasets import Dataset, DatasetGroup
from .schemas import INTEGER_TYPES, NUMERIC_TYPES, REQUIRED_FIELDS, Field

# The one place Great Expectations' usage analytics are switched off (unless the environment
# says otherwise): only this module imports GX, lazily, so this runs first in every process
# that validates (CLI, Dagster steps and workers, tests, benchmarks).
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

MIN_INTERACTIONS = 1000
MIN_USERS_WITH_TWO_INTERACTIONS = 25
EARLIEST_TIMESTAMP = 0  # epoch seconds; negative values are invalid
FUTURE_SLACK_SECONDS = 86_400
# Python's \s spelled out as a class of the characters themselves: pandas then runs the
# rules with Arrow's RE2 engine (it falls back to a per-value Python loop for \s).
_WS = (
    "["
    + "".join(
        map(
            chr,
            (
                *range(0x9, 0xE),
                *range(0x1C, 0x21),
                0x85,
                0xA0,
                0x1680,
                *range(0x2000, 0x200B),
                0x2028,
                0x2029,
                0x202F,
                0x205F,
                0x3000,
            ),
        )
    )
    + "]"
)
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
                for v, ln in zip(self.examples, self.lines + [None] * len(self.examples), strict=False)
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
            examples = (
                ", ".join(repr(v) for v in r.examples)
                if r.examples
                else ("" if r.observed is None else f"observed {r.observed}")
            )
            rows.append(
                f"| {r.dataset} | {r.column or ''} | {r.description} | "
                f"{'pass' if r.success else ('warn' if r.severity == 'warning' else '**FAIL**')} | {unexpected} | "
                f"{examples.replace('|', '&#124;')} |"
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
    """Rules run on one frame (``frame``, built when needed) or on every slice of the
    dataset (``per_slice``: slice table and row offset -> frame); per-rule results are
    summed over the slices. Frame indexes are row numbers of the whole dataset."""

    dataset: Dataset
    name: str
    rules: list[_Rule]
    line_offset: int | None  # file line of row 0, for messages (None: no line numbers)
    frame: Callable[[], pd.DataFrame] | None = None
    per_slice: Callable[[pa.Table, int], pd.DataFrame] | None = None


TABLE_RULES = ("ExpectTableColumnsToMatchSet", "ExpectColumnToExist")


def _slice_frame(
    columns: Sequence[str], convert: Callable[[pa.ChunkedArray], pa.ChunkedArray] | None = None
) -> Callable[[pa.Table, int], pd.DataFrame]:
    """Slice table and row offset -> the frame of ``columns`` (each through ``convert`` if
    given), indexed by row number in the whole dataset."""

    def frame(part: pa.Table, offset: int) -> pd.DataFrame:
        table = part.select(columns) if convert is None else pa.table({name: convert(part[name]) for name in columns})
        out = table.to_pandas()
        out.index = pd.RangeIndex(offset, offset + len(out))
        return out

    return frame


def _as_number(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """float64 of the values that are numbers (FLOAT_REGEX), missing for the rest."""
    ok = pc.fill_null(pc.match_substring_regex(column, FLOAT_REGEX), False)
    return pc.cast(pc.if_else(ok, pc.utf8_trim_whitespace(column), pa.scalar(None, pa.string())), pa.float64())


class _UserCounts:
    """Interactions per USER_ID, summed over slices."""

    def __init__(self):
        self.parts: list[pa.Table] = []

    def add(self, part: pa.Table) -> None:
        counts = pc.value_counts(part["USER_ID"])
        self.parts.append(pa.table({"user": counts.field("values"), "n": counts.field("counts")}))
        if len(self.parts) >= 8:  # keep the partial counts small
            self.parts = [self._merged()]

    def _merged(self) -> pa.Table:
        if not self.parts:
            return pa.table({"user": pa.array([], pa.string()), "n": pa.array([], pa.int64())})
        return pa.concat_tables(self.parts).group_by("user").aggregate([("n", "sum")]).rename_columns(["user", "n"])

    def repeat_users(self) -> pd.DataFrame:
        merged = self._merged()
        keep = pc.and_(pc.is_valid(merged["user"]), pc.greater_equal(merged["n"], 2))
        return pd.DataFrame({"USER_ID": merged["user"].filter(keep).to_pandas()})


def build_batches(
    dataset: Dataset, now: float | None = None, scope: str = "all"
) -> tuple[list[_Batch], _UserCounts | None]:
    """The GE expectations for one dataset, generated from its schema, and the per-user
    counter the ``user_history`` batch reads (filled by the caller's pass over the slices).

    Column rules run on every slice of the dataset; table rules on the header and on the
    row count; uniqueness (items / users) on the whole id column. ``scope`` "file": the
    rules of one file of a dataset (no Personalize minimums, which hold for the whole
    dataset, not each import); "minimums": those minimums only."""
    import great_expectations as gx

    E = gx.expectations
    users = _UserCounts() if dataset.dataset_type == "interactions" and "USER_ID" in dataset.column_names else None
    rules = [
        *_header_rules(E, dataset),
        *_field_rules(E, dataset),
        *_unique_id_rules(E, dataset),
        *_interaction_count_rules(E, dataset),
        *_timestamp_rules(E, dataset, now),
        *(_repeat_user_rules(E) if users is not None else []),
    ]
    rules, users = _in_scope(rules, users, scope)
    return _batches(dataset, rules, users), users


def _header_rules(E: Any, dataset: Dataset) -> list[_Rule]:
    """The columns are exactly the schema file's (when the schema comes from a file), and
    each required column is present."""
    schema = dataset.schema
    rules: list[_Rule] = []
    if schema.from_file:
        rules.append(
            _Rule(
                E.ExpectTableColumnsToMatchSet(column_set=schema.names, exact_match=True),
                "columns match the schema file " + ", ".join(schema.names),
                None,
            )
        )
    for name in REQUIRED_FIELDS[dataset.dataset_type]:
        rules.append(_Rule(E.ExpectColumnToExist(column=name), f"required column {name} is present", name))
    return rules


def _field_rules(E: Any, dataset: Dataset) -> list[_Rule]:
    """For each schema field the file has, in schema order: no empty values (required or
    not nullable fields), then its values parse as its type (``_format_rule``)."""
    present = set(dataset.column_names)
    required = REQUIRED_FIELDS[dataset.dataset_type]
    rules: list[_Rule] = []
    for f in dataset.schema.fields:
        if f.name not in present:
            continue
        if f.name in required or not f.nullable:
            rules.append(_Rule(E.ExpectColumnValuesToNotBeNull(column=f.name), "has no empty values", f.name))
        rule = _format_rule(E, f)
        if rule is not None:
            rules.append(rule)
    return rules


def _format_rule(E: Any, f: Field) -> _Rule | None:
    """The field's values are integers, numbers or booleans as its type says (a regex on
    the text); None for other types."""
    if f.type in INTEGER_TYPES:
        return _Rule(
            E.ExpectColumnValuesToMatchRegex(column=f.name, regex=INT_REGEX),
            f"values are integers ({f.type})",
            f.name,
        )
    if f.type in NUMERIC_TYPES:
        return _Rule(
            E.ExpectColumnValuesToMatchRegex(column=f.name, regex=FLOAT_REGEX),
            f"values are numbers ({f.type})",
            f.name,
        )
    if f.type == "boolean":
        return _Rule(
            E.ExpectColumnValuesToMatchRegex(column=f.name, regex=BOOL_REGEX),
            "values are true or false",
            f.name,
        )
    return None


def _unique_id_rules(E: Any, dataset: Dataset) -> list[_Rule]:
    """Items' ITEM_ID and users' USER_ID are unique (a warning), when the file has it."""
    id_column = {"items": "ITEM_ID", "users": "USER_ID"}.get(dataset.dataset_type)
    if not id_column or id_column not in dataset.column_names:
        return []
    return [
        _Rule(
            E.ExpectColumnValuesToBeUnique(column=id_column),
            "ids are unique (for repeated ids the last row is used)",
            id_column,
            severity="warning",
        )
    ]


def _interaction_count_rules(E: Any, dataset: Dataset) -> list[_Rule]:
    """Interactions: Personalize's minimum number of rows."""
    if dataset.dataset_type != "interactions":
        return []
    return [
        _Rule(
            E.ExpectTableRowCountToBeBetween(min_value=MIN_INTERACTIONS),
            f"at least {MIN_INTERACTIONS} interactions (Amazon Personalize minimum)",
            None,
        )
    ]


def _timestamp_rules(E: Any, dataset: Dataset, now: float | None) -> list[_Rule]:
    """TIMESTAMP and CREATION_TIMESTAMP (those in the file and the schema) are epoch
    seconds from EARLIEST_TIMESTAMP to ``now`` (default the current time) plus
    FUTURE_SLACK_SECONDS."""
    now = time.time() if now is None else now
    latest = int(now + FUTURE_SLACK_SECONDS)
    present = set(dataset.column_names)
    return [
        _Rule(
            E.ExpectColumnValuesToBeBetween(column=name, min_value=EARLIEST_TIMESTAMP, max_value=latest),
            "is a Unix time in seconds, not in the future (milliseconds are too large)",
            name,
        )
        for name in ("TIMESTAMP", "CREATION_TIMESTAMP")
        if name in present and name in dataset.schema
    ]


def _repeat_user_rules(E: Any) -> list[_Rule]:
    """Personalize's minimum number of users with 2 or more interactions (a row count of
    the ``user_history`` frame)."""
    return [
        _Rule(
            E.ExpectTableRowCountToBeBetween(min_value=MIN_USERS_WITH_TWO_INTERACTIONS),
            f"at least {MIN_USERS_WITH_TWO_INTERACTIONS} users with 2 or more interactions (Amazon Personalize "
            "minimum)",
            None,
        )
    ]


def _in_scope(rules: list[_Rule], users: _UserCounts | None, scope: str) -> tuple[list[_Rule], _UserCounts | None]:
    """The rules and per-user counter of ``scope`` (see ``build_batches``; the Personalize
    minimums are the row-count rules), each rule numbered with its position in the report."""
    minimum_rule = lambda r: r.expectation.__class__.__name__ == "ExpectTableRowCountToBeBetween"  # noqa: E731
    if scope == "file":
        rules = [r for r in rules if not minimum_rule(r)]
        users = None
    elif scope == "minimums":
        rules = [r for r in rules if minimum_rule(r)]
    for i, rule in enumerate(rules):
        rule.order = i
    return rules, users


def _rule_groups(dataset: Dataset, rules: list[_Rule], users: _UserCounts | None) -> dict[str, list[_Rule]]:
    """The rules by the batch that runs them (see ``_batches``): the table rules, the
    interactions' row count and the repeat-user count (the second row-count rule, when
    ``users`` counts), uniqueness, timestamp ranges, and the rest (column rules on text)."""
    kind = {r.order: r.expectation.__class__.__name__ for r in rules}
    header = [r for r in rules if kind[r.order] in TABLE_RULES]
    counts = [r for r in rules if kind[r.order] == "ExpectTableRowCountToBeBetween"]
    row_count, history = counts[:1] if dataset.dataset_type == "interactions" else [], counts[1:] if users else []
    unique = [r for r in rules if kind[r.order] == "ExpectColumnValuesToBeUnique"]
    typed = [r for r in rules if kind[r.order] == "ExpectColumnValuesToBeBetween"]
    per_row = [r for r in rules if r not in header + counts + unique + typed]
    return {
        "header": header,
        "raw": per_row,
        "unique": unique,
        "row_count": row_count,
        "typed": typed,
        "user_history": history,
    }


def _batches(dataset: Dataset, rules: list[_Rule], users: _UserCounts | None) -> list[_Batch]:
    """The batches of the non-empty rule groups, in this order: ``header`` (an empty frame
    with the file's columns), ``raw`` (each slice's text of the columns the rules name),
    ``unique`` (the whole id column), ``row_count`` (one row per dataset row), ``typed``
    (each slice's timestamp columns as numbers), ``user_history`` (the users with 2 or
    more interactions, from ``users``)."""
    names = dataset.column_names
    line_offset = 2 if dataset.source.endswith((".csv", ".csv.gz")) else None
    groups = _rule_groups(dataset, rules, users)
    header, per_row, unique = groups["header"], groups["raw"], groups["unique"]
    row_count, typed, history = groups["row_count"], groups["typed"], groups["user_history"]
    n = dataset.num_rows
    batches = []
    if header:
        empty = pa.table({name: pa.array([], pa.string()) for name in names})
        batches.append(_Batch(dataset, "header", header, line_offset, frame=lambda: empty.to_pandas()))
    if per_row:
        columns = sorted({r.column for r in per_row if r.column is not None}, key=names.index)
        batches.append(_Batch(dataset, "raw", per_row, line_offset, per_slice=_slice_frame(columns)))
    if unique:
        id_columns = [r.column for r in unique]
        batches.append(
            _Batch(dataset, "unique", unique, line_offset, frame=lambda: dataset.table.select(id_columns).to_pandas())
        )
    if row_count:
        batches.append(
            _Batch(
                dataset, "row_count", row_count, None, frame=lambda: pd.DataFrame({"row": np.zeros(n, dtype=np.int8)})
            )
        )
    if typed:
        typed_cols = [r.column for r in typed if r.column is not None]
        batches.append(_Batch(dataset, "typed", typed, line_offset, per_slice=_slice_frame(typed_cols, _as_number)))
    if history and users is not None:
        batches.append(_Batch(dataset, "user_history", history, None, frame=users.repeat_users))
    return batches


def validate(
    group: DatasetGroup, dataset_types: tuple[str, ...] | None = None, now: float | None = None
) -> ValidationReport:
    """Run the generated suites on the dataset group (or only the named datasets)."""
    datasets = [d for d in group.datasets() if dataset_types is None or d.dataset_type in dataset_types]
    return validate_datasets(datasets, group.location, now=now)


def validate_datasets(
    datasets: list[Dataset],
    location: str,
    now: float | None = None,
    slice_rows: int | None = None,
    scope: str | None = None,
) -> ValidationReport:
    """One pass over each dataset's slices (``slice_rows`` rows, default the dataset's)
    runs the per-slice suites; the whole-table suites run once after it. A dataset read
    from several files is checked file by file, then for the Personalize minimums as a
    whole; ``scope="file"`` checks files only (an increment: the minimums hold for the
    dataset it is added to)."""
    start = time.perf_counter()
    results: list[RuleResult] = []
    context = _context()
    checks = [(part, scope or ("file" if len(d.files()) > 1 else "all")) for d in datasets for part in d.files()]
    checks += [(d, "minimums") for d in datasets if len(d.files()) > 1 and scope is None]
    for n_check, (dataset, scope) in enumerate(checks):
        batches, users = build_batches(dataset, now=now, scope=scope)
        runs = [
            _Suite(context, batch, f"{dataset.dataset_type}_{n_check}_{batch.name}_{i}")
            for i, batch in enumerate(batches)
        ]
        sliced = [(run, frame) for run in runs if (frame := run.batch.per_slice) is not None]
        if sliced or users is not None:
            offset = 0
            for part in dataset.slices(slice_rows):
                for run, frame in sliced:
                    run.run(frame(part, offset))
                if users is not None:
                    users.add(part)
                offset += part.num_rows
        for run in runs:
            if run.batch.frame is not None:
                run.run(run.batch.frame())
        found = [pair for run in runs for pair in run.merged.items()]
        results += [r for _, r in sorted(found, key=lambda pair: pair[0])]
        for run in runs:  # GE's context outlives the call: drop what would keep the last batches
            run.close(context)
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


class _Suite:
    """A batch's GE suite and validation definition; ``run`` adds one frame's outcomes."""

    def __init__(self, context, batch: _Batch, name: str):
        import great_expectations as gx

        self.batch = batch
        self.names = (f"src_{name}", f"suite_{name}", f"vd_{name}")
        source = context.data_sources.add_pandas(f"src_{name}")
        asset = source.add_dataframe_asset(name)
        definition = asset.add_batch_definition_whole_dataframe("whole")
        suite = context.suites.add(gx.ExpectationSuite(name=f"suite_{name}"))
        self.by_id = {suite.add_expectation(rule.expectation).id: rule for rule in batch.rules}
        self.vd = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"vd_{name}", data=definition, suite=suite)
        )
        self.merged: dict[int, RuleResult] = {}

    def close(self, context) -> None:
        """Remove this suite's data source, suite and validation definition from GE's
        context, which lives as long as the process and would keep the last batch."""
        source, suite, definition = self.names
        context.validation_definitions.delete(definition)
        context.suites.delete(suite)
        context.data_sources.delete(source)

    def run(self, frame: pd.DataFrame) -> None:
        result = self.vd.run(
            batch_parameters={"dataframe": frame},
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES},
        )
        for res in result.results:
            spec = self.by_id[res.expectation_config.id]
            one = _rule_result(self.batch, spec, res)
            self.merged[spec.order] = _merge(self.merged[spec.order], one) if spec.order in self.merged else one


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
