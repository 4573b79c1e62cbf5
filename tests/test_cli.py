"""The ``personalize-pipeline`` CLI contract (DESIGN.md): happy paths of every subcommand
and a catalogue of bad inputs.

Every bad input must give exit code 2, exactly one non-empty line on stderr naming the
offending file / line / field / option, no traceback, and leave earlier outputs
byte-identical. The real console script runs in a subprocess for the happy paths and a few
error cases; most error cases call ``cli.main`` in-process (imports cost ~3 s per process).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import call

from personalize_pipeline.demo_data import DemoSpec, generate

SPEC = DemoSpec(users=300, items=200, interactions=6000, seed=1)
RECIPE = "aws-popularity-count"
RECIPE_ARN = "arn:aws:personalize:::recipe/aws-popularity-count"
ENV = {k: v for k, v in os.environ.items() if k != "PERSONALIZE_DEBUG"}

PERSONALIZE_METRICS = {
    "coverage",
    "mean_reciprocal_rank_at_25",
    *(f"normalized_discounted_cumulative_gain_at_{k}" for k in (5, 10, 25)),
    *(f"precision_at_{k}" for k in (5, 10, 25)),
}
LEAVE_LAST_OUT_METRICS = {
    "coverage",
    *(
        f"{m}_at_{k}"
        for m in ("hit_rate", "normalized_discounted_cumulative_gain", "mean_reciprocal_rank")
        for k in (5, 10, 25)
    ),
}
EVALUATE_KEYS = {
    "recipe",
    "protocol",
    "metrics",
    "baseline",
    "lift",
    "train_seconds",
    "train_events_per_second",
    "peak_rss_mb",
    "training",  # added: the recipe's training report (epochs, early stopping, ...)
}


# --- helpers ---------------------------------------------------------------------------------


def run_cli(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real console script, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "personalize_pipeline.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        timeout=300,
    )


def assert_no_traceback(out: str, err: str) -> None:
    assert "Traceback" not in err and "Traceback" not in out, err + out


def assert_one_line_error(rc: int, out: str, err: str, *needles: str) -> str:
    """Exit 2, stderr exactly one non-empty line containing every needle; returns it."""
    assert_no_traceback(out, err)
    assert rc == 2, f"exit code {rc}, stderr: {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"expected one stderr line, got {lines!r}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def tree(path: Path) -> dict[str, bytes]:
    """Every file under path with its bytes (to prove nothing changed)."""
    if not path.exists():
        return {}
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def csv_rows(d: Path) -> list[list[str]]:
    text = (d / "interactions.csv").read_text()
    assert '"' not in text  # the demo data has no quoted fields, so split(",") is exact
    return [line.split(",") for line in text.splitlines()]


def write_rows(d: Path, rows: list[list[str]]) -> None:
    (d / "interactions.csv").write_text("".join(",".join(r) + "\n" for r in rows))


def set_field(d: Path, column: str, file_lines: list[int], value: str) -> None:
    """Set ``column`` on the given file lines (1 = header)."""
    rows = csv_rows(d)
    col = rows[0].index(column)
    for ln in file_lines:
        rows[ln - 1][col] = value
    write_rows(d, rows)


def schema(d: Path) -> dict:
    return json.loads((d / "schemas" / "interactions.json").read_text())


def write_schema(d: Path, doc) -> None:
    (d / "schemas" / "interactions.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))


def expected_popular(dataset: Path, k: int) -> list[str]:
    """aws-popularity-count's order, computed independently: unique users desc, events desc, ITEM_ID."""
    df = pd.read_csv(dataset / "interactions.csv", dtype=str)
    stats = df.groupby("ITEM_ID").agg(users=("USER_ID", "nunique"), events=("USER_ID", "size")).reset_index()
    stats = stats.sort_values(["users", "events", "ITEM_ID"], ascending=[False, False, True])
    return stats["ITEM_ID"].head(k).tolist()


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli") / "D"
    generate(d, SPEC)
    return d


@pytest.fixture(scope="module")
def full(demo, tmp_path_factory) -> tuple[Path, dict]:
    """A FULL solution trained by the real console script: (solution folder, printed JSON)."""
    out = tmp_path_factory.mktemp("cli") / "S"
    proc = run_cli("train", "--dataset", demo, "--recipe", RECIPE, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc.stdout, proc.stderr)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    return out, json.loads(lines[0])


@pytest.fixture
def dataset(demo, tmp_path) -> Path:
    """A private copy of the demo dataset group, to break."""
    d = tmp_path / "D"
    shutil.copytree(demo, d)
    return d


@pytest.fixture
def solution(full, tmp_path) -> Path:
    """A private copy of the FULL solution, as the earlier output a failing run must not touch."""
    s = tmp_path / "S"
    shutil.copytree(full[0], s)
    return s


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("PERSONALIZE_DEBUG", raising=False)


# --- happy paths (real console script) --------------------------------------------------------


def test_demo_data_creates_the_dataset_group(tmp_path, demo):
    out = tmp_path / "D"
    proc = run_cli("demo-data", "--out", out, "--users", 300, "--items", 200, "--interactions", 6000, "--seed", 1)
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc.stdout, proc.stderr)
    summary = json.loads(proc.stdout)
    assert (summary["users"], summary["items"], summary["interactions"]) == (300, 200, 6000)
    expected = {
        "interactions.csv",
        "items.csv",
        "users.csv",
        "batch-input/users.jsonl",
        "schemas/interactions.json",
        "schemas/items.json",
        "schemas/users.json",
    }
    assert expected <= set(tree(out))
    assert len((out / "interactions.csv").read_text().splitlines()) == 6000 + 1
    assert len((out / "users.csv").read_text().splitlines()) == 300 + 1
    assert len((out / "items.csv").read_text().splitlines()) == 200 + 1
    assert tree(out) == tree(demo)  # deterministic: same spec, same bytes as generate()


def test_demo_data_rejects_a_bad_spec(tmp_path, capsys):
    rc, out, err = call(capsys, "demo-data", "--out", tmp_path / "D", "--users", -5)
    assert_one_line_error(rc, out, err, "demo-data")
    assert not (tmp_path / "D").exists()


def test_validate_passes(demo):
    proc = run_cli("validate", "--dataset", demo)
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc.stdout, proc.stderr)
    assert proc.stdout.startswith("validation PASSED") and "FAIL" not in proc.stdout
    assert proc.stderr == ""


def test_train_full(full):
    solution, printed = full
    assert printed["training_mode"] == "FULL" and printed["recipe"] == RECIPE
    index = json.loads((solution / "solution.json").read_text())
    assert index["latest"] == index["latest_full"] == printed["solution_version"]
    assert [v["id"] for v in index["versions"]] == [printed["solution_version"]]
    assert (solution / "versions" / printed["solution_version"] / "manifest.json").is_file()


def test_train_update_starts_from_the_full_version(demo, full, tmp_path):
    base, printed = full
    before = tree(base)
    out = tmp_path / "U"
    # the ARN form of the recipe name is accepted; the mode is case-insensitive
    proc = run_cli(
        "train", "--dataset", demo, "--recipe", RECIPE_ARN, "--training-mode", "update", "--base", base, "--out", out
    )
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc.stdout, proc.stderr)
    update = json.loads(proc.stdout.strip())
    assert update["training_mode"] == "UPDATE" and update["recipe"] == RECIPE
    index = json.loads((out / "solution.json").read_text())
    (entry,) = index["versions"]
    assert entry["id"] == update["solution_version"] and entry["training_mode"] == "UPDATE"
    assert entry["base_version"] == printed["solution_version"]
    manifest = json.loads((out / "versions" / entry["id"] / "manifest.json").read_text())
    assert manifest["base_version"] == printed["solution_version"]
    assert tree(base) == before  # the base is only read


def _check_evaluate(stdout: str, protocol: str, names: set[str]) -> None:
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout  # exactly one JSON object, nothing else
    result = json.loads(lines[0])
    assert set(result) == EVALUATE_KEYS
    assert result["recipe"] == RECIPE and result["protocol"] == protocol
    assert set(result["metrics"]) == names
    for name, value in result["metrics"].items():
        assert 0.0 <= value <= 1.0, (name, value)
    # the popularity baseline on the same split, and the lift over it (DESIGN.md contract)
    assert set(result["baseline"]) == names
    for name, value in result["metrics"].items():
        base = result["baseline"][name]
        expected = value / base - 1.0 if base else None
        assert result["lift"][name] == (pytest.approx(expected) if expected is not None else None), name
    assert result["train_seconds"] >= 0 and result["peak_rss_mb"] > 0
    assert isinstance(result["training"], dict)


def test_evaluate_personalize_protocol(demo):
    proc = run_cli("evaluate", "--dataset", demo, "--recipe", RECIPE, "--protocol", "personalize", "--json")
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc.stdout, proc.stderr)
    _check_evaluate(proc.stdout, "personalize", PERSONALIZE_METRICS)


def test_evaluate_leave_last_out_protocol(demo, capsys):
    rc, out, err = call(
        capsys, "evaluate", "--dataset", demo, "--recipe", RECIPE_ARN, "--protocol", "leave-last-out", "--json"
    )
    assert rc == 0, err
    assert_no_traceback(out, err)
    _check_evaluate(out, "leave-last-out", LEAVE_LAST_OUT_METRICS)


def test_batch_infer(demo, full, tmp_path):
    solution, _ = full
    job = tmp_path / "job.jsonl"
    users = ["u000001", "u000002", "nobody-at-all", "u000003"]
    job.write_text("".join(json.dumps({"userId": u}) + "\n" for u in users))
    out = tmp_path / "out"
    proc = run_cli("batch-infer", "--solution", solution, "--input", job, "--output", out, "--num-results", 7)
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc.stdout, proc.stderr)
    summary = json.loads(proc.stdout)
    assert summary["lines"] == 4 and summary["errors"] == 0 and summary["unknown_users"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["job.jsonl.out"]  # no temporary files left
    rows = [json.loads(line) for line in (out / "job.jsonl.out").read_text().splitlines()]
    assert len(rows) == len(users)
    popular = expected_popular(demo, 7)
    for user, row in zip(users, rows, strict=True):
        assert set(row) == {"input", "output", "error"}
        assert row["input"] == {"userId": user} and row["error"] is None
        assert set(row["output"]) == {"recommendedItems", "scores"}
        items, scores = row["output"]["recommendedItems"], row["output"]["scores"]
        assert len(items) == len(scores) == 7 and len(set(items)) == 7
        assert scores == sorted(scores, reverse=True)
    assert rows[2]["output"]["recommendedItems"] == popular  # an unknown user gets the popular items


def test_batch_infer_default_num_results_and_demo_input(demo, full, tmp_path, capsys):
    rc, out, err = call(
        capsys,
        "batch-infer",
        "--solution",
        full[0],
        "--input",
        demo / "batch-input" / "users.jsonl",
        "--output",
        tmp_path / "o",
    )
    assert rc == 0, err
    assert_no_traceback(out, err)
    n_in = len((demo / "batch-input" / "users.jsonl").read_text().splitlines())
    rows = [json.loads(line) for line in (tmp_path / "o" / "users.jsonl.out").read_text().splitlines()]
    assert len(rows) == n_in
    assert all(len(r["output"]["recommendedItems"]) == 25 and r["error"] is None for r in rows)


def test_batch_infer_bad_lines_do_not_fail_the_job(full, tmp_path, capsys):
    lines = [
        json.dumps({"userId": "u000001"}),
        "{not json",
        json.dumps({"foo": 1}),
        json.dumps({"userId": "u000002", "itemList": ["i000001", "i000002"]}),
        json.dumps([1, 2, 3]),
        json.dumps({"userId": ""}),
        json.dumps({"userId": "u000003"}),
    ]
    job = tmp_path / "bad.jsonl"
    job.write_text("\n".join(lines) + "\n")
    rc, out, err = call(
        capsys, "batch-infer", "--solution", full[0], "--input", job, "--output", tmp_path / "o", "--num-results", 5
    )
    assert rc == 0, err
    assert_no_traceback(out, err)
    assert json.loads(out)["errors"] == 5
    rows = [json.loads(line) for line in (tmp_path / "o" / "bad.jsonl.out").read_text().splitlines()]
    assert len(rows) == len(lines)
    for i in (0, 6):
        assert rows[i]["error"] is None and len(rows[i]["output"]["recommendedItems"]) == 5
    expected = {1: "invalid JSON", 2: "userId", 3: "itemList", 4: "JSON object", 5: "userId"}
    for i, needle in expected.items():
        assert rows[i]["output"] is None, rows[i]
        assert isinstance(rows[i]["error"], str) and needle in rows[i]["error"], rows[i]
        assert f"line {i + 1}" in rows[i]["error"]
    assert rows[1]["input"] == "{not json"  # the raw text is echoed when it is not JSON
    assert rows[2]["input"] == {"foo": 1}


# --- bad data: one line, exit 2, earlier outputs untouched ----------------------------------------


def _drop_column(d: Path, column: str) -> None:
    rows = csv_rows(d)
    col = rows[0].index(column)
    write_rows(d, [r[:col] + r[col + 1 :] for r in rows])


def _no_schemas(d: Path) -> None:
    shutil.rmtree(d / "schemas")


def _missing_timestamp_without_schema(d: Path) -> None:
    _no_schemas(d)
    _drop_column(d, "TIMESTAMP")


def _milliseconds(d: Path) -> None:
    rows = csv_rows(d)
    col = rows[0].index("TIMESTAMP")
    for r in rows[1:]:
        r[col] = str(int(r[col]) * 1000)
    write_rows(d, rows)


def _duplicate_header(d: Path) -> None:
    rows = csv_rows(d)
    rows[0][rows[0].index("DEVICE")] = "USER_ID"
    write_rows(d, rows)


def _non_utf8(d: Path) -> None:
    lines = (d / "interactions.csv").read_bytes().split(b"\n")
    lines[9] = lines[9] + b"\xff\xfe"  # file line 10, in the DEVICE field
    (d / "interactions.csv").write_bytes(b"\n".join(lines))


def _garbage_gzip(d: Path) -> None:
    (d / "interactions.csv").unlink()
    (d / "interactions.csv.gz").write_bytes(b"this is not gzip at all\n" * 10)


def _truncated_gzip(d: Path) -> None:
    data = gzip.compress((d / "interactions.csv").read_bytes())
    (d / "interactions.csv").unlink()
    (d / "interactions.csv.gz").write_bytes(data[: len(data) // 2])


def _extra_field(d: Path) -> None:
    rows = csv_rows(d)
    rows[6].append("surprise")  # file line 7
    write_rows(d, rows)


def _schema_declares_missing_column(d: Path) -> None:
    doc = schema(d)
    doc["fields"].append({"name": "COLOR", "type": ["null", "string"]})
    write_schema(d, doc)


def _schema_not_a_record(d: Path) -> None:
    write_schema(d, {"type": "record", "name": "Interactions"})


def _few_interactions(d: Path) -> None:
    write_rows(d, csv_rows(d)[: 1 + 999])


def _few_users_with_history(d: Path) -> None:
    rows = csv_rows(d)
    col = rows[0].index("USER_ID")
    for i, r in enumerate(rows[1:]):
        r[col] = f"pair{i // 2:03d}" if i < 48 else f"solo{i:05d}"  # 24 users with 2 events, the rest 1
    write_rows(d, rows)


def _csv_and_parquet(d: Path) -> None:
    (d / "interactions.parquet").write_bytes(b"PAR1")


# (id, how to break a copy of the demo dataset, what the one error line must name)
BAD_DATA = [
    ("no-interactions-file", lambda d: (d / "interactions.csv").unlink(), ["interactions.csv"]),
    ("missing-timestamp-column", lambda d: _drop_column(d, "TIMESTAMP"), ["interactions.csv", "TIMESTAMP"]),
    ("missing-timestamp-no-schema", _missing_timestamp_without_schema, ["interactions.csv", "TIMESTAMP"]),
    (
        "text-in-timestamp",
        lambda d: set_field(d, "TIMESTAMP", [5], "yesterday"),
        ["interactions.csv", "TIMESTAMP", "line 5", "yesterday"],
    ),
    (
        "text-in-event-value",
        lambda d: set_field(d, "EVENT_VALUE", [9, 12], "lots"),
        ["interactions.csv", "EVENT_VALUE", "line 9"],
    ),
    ("empty-user-id", lambda d: set_field(d, "USER_ID", [3, 4], ""), ["interactions.csv", "USER_ID", "empty"]),
    ("timestamps-in-milliseconds", _milliseconds, ["interactions.csv", "TIMESTAMP", "milliseconds"]),
    ("empty-file", lambda d: (d / "interactions.csv").write_bytes(b""), ["interactions.csv", "empty"]),
    ("header-only", lambda d: write_rows(d, csv_rows(d)[:1]), ["interactions.csv", "no data rows"]),
    ("duplicate-header-column", _duplicate_header, ["interactions.csv", "USER_ID", "twice"]),
    ("non-utf8-bytes", _non_utf8, ["interactions.csv", "UTF-8", "line 10"]),
    ("garbage-gzip", _garbage_gzip, ["interactions.csv.gz", "gzip"]),
    ("truncated-gzip", _truncated_gzip, ["interactions.csv.gz", "gzip"]),
    ("extra-field", _extra_field, ["interactions.csv", "line 7", "fields"]),
    ("schema-not-json", lambda d: write_schema(d, "{not json"), ["schemas/interactions.json", "JSON"]),
    ("schema-not-a-record", _schema_not_a_record, ["schemas/interactions.json", "record"]),
    ("schema-declares-missing-column", _schema_declares_missing_column, ["interactions.csv", "COLOR"]),
    ("under-1000-interactions", _few_interactions, ["interactions.csv", "1000 interactions"]),
    ("under-25-users-with-history", _few_users_with_history, ["interactions.csv", "25 users"]),
    ("csv-and-parquet", _csv_and_parquet, ["interactions.csv", "interactions.parquet"]),
]


@pytest.mark.parametrize("break_it, needles", [pytest.param(f, n, id=i) for i, f, n in BAD_DATA])
def test_train_rejects_bad_data(dataset, solution, capsys, break_it, needles):
    break_it(dataset)
    before = tree(solution)
    rc, out, err = call(capsys, "train", "--dataset", dataset, "--recipe", RECIPE, "--out", solution)
    assert_one_line_error(rc, out, err, *needles)
    assert out == ""
    assert tree(solution) == before  # solution.json and every version byte-identical


# the validation rule each bad dataset breaks, as `validate` reports it on stdout
VALIDATION_FAILURES = {
    "missing-timestamp-column": "required column TIMESTAMP is present",
    "text-in-timestamp": "values are integers",
    "text-in-event-value": "values are numbers",
    "empty-user-id": "has no empty values",
    "timestamps-in-milliseconds": "is a Unix time in seconds",
    "schema-declares-missing-column": "columns match the schema file",
    "under-1000-interactions": "at least 1000 interactions",
    "under-25-users-with-history": "at least 25 users with 2 or more interactions",
}


@pytest.mark.parametrize(
    "break_it, needles, rule",
    [pytest.param(f, n, VALIDATION_FAILURES[i], id=i) for i, f, n in BAD_DATA if i in VALIDATION_FAILURES],
)
def test_validate_reports_the_failed_rule(dataset, capsys, break_it, needles, rule):
    break_it(dataset)
    rc, out, err = call(capsys, "validate", "--dataset", dataset)
    assert_one_line_error(rc, out, err, "validation failed", *needles)  # same line as train's
    assert out.startswith("validation FAILED")
    fails = [line for line in out.splitlines() if line.strip().startswith("FAIL")]
    assert any(rule in line and "interactions.csv" in line for line in fails), out


def test_validate_json_report(dataset, capsys):
    set_field(dataset, "TIMESTAMP", [5], "yesterday")
    rc, out, err = call(capsys, "validate", "--dataset", dataset, "--json")
    assert rc == 2
    assert_no_traceback(out, err)
    report = json.loads(out)
    assert report["success"] is False
    failed = [r for r in report["results"] if not r["success"] and r["severity"] == "error"]
    assert any(r["column"] == "TIMESTAMP" and 5 in r["lines"] for r in failed), failed


@pytest.mark.parametrize(
    "break_it, needles", [pytest.param(f, n, id=i) for i, f, n in BAD_DATA if i in ("empty-file", "extra-field")]
)
def test_validate_rejects_unreadable_files(dataset, capsys, break_it, needles):
    break_it(dataset)
    rc, out, err = call(capsys, "validate", "--dataset", dataset)
    assert_one_line_error(rc, out, err, *needles)


def test_evaluate_rejects_bad_data(dataset, capsys):
    set_field(dataset, "TIMESTAMP", [5], "yesterday")
    rc, out, err = call(capsys, "evaluate", "--dataset", dataset, "--recipe", RECIPE, "--json")
    assert_one_line_error(rc, out, err, "TIMESTAMP", "line 5")
    assert out == ""


@pytest.mark.slow
def test_real_script_bad_data_error(dataset, solution):
    """The real console script, end to end, on bad data: one line, exit 2, solution untouched."""
    set_field(dataset, "TIMESTAMP", [5], "yesterday")
    before = tree(solution)
    proc = run_cli("train", "--dataset", dataset, "--recipe", RECIPE, "--out", solution)
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, "interactions.csv", "TIMESTAMP", "line 5")
    assert proc.stdout == ""
    assert tree(solution) == before


# --- bad options and locations --------------------------------------------------------------------


def test_train_and_evaluate_option_errors(demo, full, solution, tmp_path, capsys):
    """Each case: exit 2, one line naming the culprit, the earlier solution untouched, and
    no new output folder created."""
    update_only = tmp_path / "U"  # a solution with only an UPDATE version: no FULL to start from
    shutil.copytree(full[0], update_only)
    index = json.loads((update_only / "solution.json").read_text())
    index.pop("latest_full")
    for v in index["versions"]:
        v["training_mode"] = "UPDATE"
    (update_only / "solution.json").write_text(json.dumps(index))
    (tmp_path / "empty").mkdir()
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("hello\n")
    new_out = tmp_path / "new-solution"

    train = ["train", "--dataset", demo, "--recipe", RECIPE]
    cases = [
        (
            ["train", "--dataset", tmp_path / "no-such-folder", "--recipe", RECIPE, "--out", solution],
            ["no-such-folder", "does not exist"],
        ),
        (["train", "--dataset", a_file, "--recipe", RECIPE, "--out", solution], ["a-file.txt"]),
        (["train", "--dataset", demo, "--recipe", "aws-nope", "--out", solution], ["aws-nope"]),
        (
            ["train", "--dataset", demo, "--recipe", "arn:aws:personalize:::recipe/aws-nope", "--out", solution],
            ["aws-nope"],
        ),
        ([*train, "--hp", "foo=1", "--out", solution], ["foo"]),
        ([*train, "--hp", "foo", "--out", solution], ["--hp", "foo", "KEY=VALUE"]),
        ([*train, "--hp", "=1", "--out", solution], ["--hp"]),
        ([*train, "--training-mode", "UPDATE", "--out", new_out], ["--base"]),
        (
            [*train, "--training-mode", "UPDATE", "--base", tmp_path / "empty", "--out", new_out],
            ["UPDATE", "FULL", "empty"],
        ),
        (
            [*train, "--training-mode", "UPDATE", "--base", tmp_path / "nope", "--out", new_out],
            ["UPDATE", "FULL", "nope", "does not exist"],
        ),
        ([*train, "--training-mode", "UPDATE", "--base", update_only, "--out", new_out], ["UPDATE", "FULL"]),
        ([*train, "--training-mode", "UPDATE", "--base", update_only, "--out", solution], ["UPDATE", "FULL"]),
        ([*train, "--training-mode", "SIDEWAYS", "--out", solution], ["--training-mode", "SIDEWAYS"]),
        ([*train, "--out", a_file], ["a-file.txt", "--out"]),
        ([*train, "--event-type", "no-such-event", "--out", solution], ["EVENT_TYPE", "no-such-event"]),
        (["train", "--dataset", demo, "--out", solution], ["--recipe"]),
        (["evaluate", "--dataset", demo, "--recipe", "aws-nope", "--json"], ["aws-nope"]),
        (["evaluate", "--dataset", demo, "--recipe", RECIPE, "--hp", "foo=1", "--json"], ["foo"]),
        (
            ["evaluate", "--dataset", demo, "--recipe", RECIPE, "--protocol", "holdout", "--json"],
            ["--protocol", "holdout"],
        ),
        (["evaluate", "--dataset", tmp_path / "no-such-folder", "--recipe", RECIPE, "--json"], ["no-such-folder"]),
        (["validate", "--dataset", tmp_path / "no-such-folder"], ["no-such-folder", "does not exist"]),
        (["validate", "--dataset", tmp_path / "empty"], ["interactions.csv"]),
        (["frobnicate"], ["frobnicate"]),
    ]
    before = {p: tree(p) for p in (solution, update_only, a_file, demo)}
    for args, needles in cases:
        rc, out, err = call(capsys, *args)
        try:
            assert_one_line_error(rc, out, err, *needles)
            assert out == ""
            assert {p: tree(p) for p in before} == before
            assert not new_out.exists()
        except AssertionError as exc:
            raise AssertionError(f"{[str(a) for a in args]}: {exc}") from None


def test_batch_infer_errors(demo, full, tmp_path, capsys):
    job = tmp_path / "job.jsonl"
    job.write_text(json.dumps({"userId": "u000001"}) + "\n")
    out_dir = tmp_path / "out"
    rc, out, err = call(capsys, "batch-infer", "--solution", full[0], "--input", job, "--output", out_dir)
    assert rc == 0, err
    earlier = tree(out_dir)
    assert list(earlier) == ["job.jsonl.out"]
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("hello\n")
    empty_job = tmp_path / "empty.jsonl"
    empty_job.write_text("\n\n")
    new_dir = tmp_path / "new-out"

    base = ["batch-infer", "--solution", full[0], "--input", job, "--output", out_dir]
    cases = [
        (
            ["batch-infer", "--solution", tmp_path / "no-solution", "--input", job, "--output", out_dir],
            ["no-solution", "does not exist"],
        ),
        (["batch-infer", "--solution", demo, "--input", job, "--output", out_dir], ["solution.json"]),
        (
            ["batch-infer", "--solution", full[0], "--input", tmp_path / "no-job.jsonl", "--output", out_dir],
            ["no-job.jsonl", "does not exist"],
        ),
        (["batch-infer", "--solution", full[0], "--input", tmp_path, "--output", out_dir], ["folder"]),
        (
            ["batch-infer", "--solution", full[0], "--input", empty_job, "--output", out_dir],
            ["empty.jsonl", "no lines"],
        ),
        (
            ["batch-infer", "--solution", full[0], "--input", empty_job, "--output", new_dir],
            ["empty.jsonl", "no lines"],
        ),
        ([*base, "--num-results", 0], ["--num-results", "500", "0"]),
        ([*base, "--num-results", 501], ["--num-results", "500", "501"]),
        ([*base, "--num-results", "seven"], ["--num-results", "seven"]),
        ([*base, "--filter-values", "{not json"], ["--filter-values", "JSON"]),
        ([*base, "--exploration-weight", 2], ["explorationWeight"]),
        (["batch-infer", "--solution", full[0], "--input", job, "--output", a_file], ["a-file.txt", "file"]),
        (["batch-infer", "--solution", full[0], "--input", job], ["--output"]),
    ]
    for args, needles in cases:
        rc, out, err = call(capsys, *args)
        try:
            assert_one_line_error(rc, out, err, *needles)
            assert out == ""
            assert tree(out_dir) == earlier  # the earlier .out is byte-identical, nothing added
            assert a_file.read_text() == "hello\n"
            assert not new_dir.exists()  # a rejected job creates no output folder
        except AssertionError as exc:
            raise AssertionError(f"{[str(a) for a in args]}: {exc}") from None


def test_real_script_batch_and_usage_errors(full, tmp_path):
    job = tmp_path / "job.jsonl"
    job.write_text(json.dumps({"userId": "u000001"}) + "\n")
    proc = run_cli(
        "batch-infer", "--solution", full[0], "--input", job, "--output", tmp_path / "o", "--num-results", 501
    )
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, "--num-results")
    assert not (tmp_path / "o").exists()
    proc = run_cli("train", "--dataset", tmp_path, "--recipe", RECIPE, "--out", tmp_path / "S", "--hp", "foo")
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, "--hp", "foo")
    proc = run_cli("evaluate", "--recipe", RECIPE)
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, "--dataset")
    assert not (tmp_path / "S").exists()
