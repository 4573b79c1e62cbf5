"""Validation of a dataset group with Great Expectations 1.x suites built from the schemas.

For every dataset three kinds of batch are validated:
- ``raw``: the file as read (every column a string): columns present (or exactly the schema
  columns when a schema file exists), ids and required fields not null, numeric and
  boolean fields parse, ids unique in items/users, Personalize's minimum row count.
- ``typed``: TIMESTAMP / CREATION_TIMESTAMP are epoch seconds in a plausible range (catches
  milliseconds and future dates).
- ``user_history`` (interactions): Personalize needs at least 25 users with 2+ interactions.

The report names the file, column and rule, with counts and example values and lines.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from .datasets import Dataset, DatasetGroup
from .schemas import INTEGER_TYPES, NUMERIC_TYPES, REQUIRED_FIELDS

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

MIN_INTERACTIONS = 1000
MIN_USERS_WITH_TWO_INTERACTIONS = 25
EARLIEST_TIMESTAMP = 0  # epoch seconds; negative values are invalid
FUTURE_SLACK_SECONDS = 86_400
INT_REGEX = r"^\s*[-+]?\d+\s*$"
FLOAT_REGEX = r"^\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*$"
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


@dataclass
class _Batch:
    dataset: Dataset
    name: str
    frame: pd.DataFrame
    rules: list[_Rule]
    line_offset: int | None  # file line of frame row 0, for messages (None: no line numbers)


def build_batches(dataset: Dataset, now: float | None = None) -> list[_Batch]:
    """The GE expectations for one dataset, generated from its schema."""
    import great_expectations as gx

    E = gx.expectations
    schema = dataset.schema
    raw = dataset.frame()
    present = set(raw.columns)
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
    line_offset = 2 if dataset.source.endswith((".csv", ".csv.gz")) else None
    batches = [_Batch(dataset, "raw", raw, rules, line_offset)]

    now = time.time() if now is None else now
    latest = int(now + FUTURE_SLACK_SECONDS)
    typed_rules: list[_Rule] = []
    typed_cols = {}
    for name in ("TIMESTAMP", "CREATION_TIMESTAMP"):
        if name in present and name in schema:
            typed_cols[name] = pd.to_numeric(raw[name], errors="coerce")
            typed_rules.append(
                _Rule(
                    E.ExpectColumnValuesToBeBetween(column=name, min_value=EARLIEST_TIMESTAMP, max_value=latest),
                    "is a Unix time in seconds, not in the future (milliseconds are too large)",
                    name,
                )
            )
    if typed_rules:
        batches.append(_Batch(dataset, "typed", pd.DataFrame(typed_cols), typed_rules, line_offset))

    if dataset.dataset_type == "interactions" and "USER_ID" in present:
        counts = raw["USER_ID"].value_counts()
        frame = pd.DataFrame({"USER_ID": counts.index[counts.to_numpy() >= 2]})
        batches.append(
            _Batch(
                dataset,
                "user_history",
                frame,
                [
                    _Rule(
                        E.ExpectTableRowCountToBeBetween(min_value=MIN_USERS_WITH_TWO_INTERACTIONS),
                        f"at least {MIN_USERS_WITH_TWO_INTERACTIONS} users with 2 or more interactions (Amazon Personalize minimum)",
                        None,
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


def validate_datasets(datasets: list[Dataset], location: str, now: float | None = None) -> ValidationReport:
    start = time.perf_counter()
    results: list[RuleResult] = []
    context = _context()
    for dataset in datasets:
        for i, batch in enumerate(build_batches(dataset, now=now)):
            results += _run_batch(context, batch, f"{dataset.dataset_type}_{batch.name}_{i}")
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
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _run_batch(context, batch: _Batch, name: str) -> list[RuleResult]:
    import great_expectations as gx

    source = context.data_sources.add_pandas(f"src_{name}")
    asset = source.add_dataframe_asset(name)
    definition = asset.add_batch_definition_whole_dataframe("whole")
    suite = context.suites.add(gx.ExpectationSuite(name=f"suite_{name}"))
    by_id = {}
    for rule in batch.rules:
        by_id[suite.add_expectation(rule.expectation).id] = rule
    vd = context.validation_definitions.add(gx.ValidationDefinition(name=f"vd_{name}", data=definition, suite=suite))
    run = vd.run(
        batch_parameters={"dataframe": batch.frame},
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES},
    )
    out = []
    for res in run.results:
        spec = by_id[res.expectation_config.id]
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
        out.append(
            RuleResult(
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
        )
    return out


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
