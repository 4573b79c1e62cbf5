"""The catalogue of bad inputs (issue 9), run against the CLI.

Every case must exit with code 2, print exactly one non-empty line on stderr that names the
file / line / field / option at fault, show no traceback, print nothing on stdout, and leave
every earlier output byte-identical: a solution (index + versions) and a batch ``.out`` in
the same output locations the failing command would write to. tests/test_cli.py holds the
first part of the catalogue; this file adds the rest of the kinds the issue lists. Cases
call ``cli.main`` in-process (a fresh interpreter costs ~3 s); one runs the real script.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_helpers import call

from personalize_pipeline import cli
from personalize_pipeline.batch import parse_line
from personalize_pipeline.errors import InputError
from personalize_pipeline.locations import Location
from personalize_pipeline.store import load_solution_version

RECIPE = "aws-popularity-count"
FUTURE = str(int(time.time()) + 400 * 86400)


# --- helpers ---------------------------------------------------------------------------------


def check_one_line(rc: int, out: str, err: str, needles: list[str]) -> None:
    assert "Traceback" not in out + err, err
    assert rc == 2, f"exit code {rc}, stderr {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one error line, got {lines!r}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert out == ""


def digest(path: Path) -> dict[str, str]:
    """sha256 of every file under path (names included), to prove nothing changed."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()]


def write_rows(path: Path, table: list[list[str]]) -> None:
    path.write_text("".join(",".join(r) + "\n" for r in table))


def set_cell(path: Path, column: str, file_line: int, value: str) -> None:
    table = rows(path)
    table[file_line - 1][table[0].index(column)] = value
    write_rows(path, table)


def drop_column(path: Path, column: str) -> None:
    table = rows(path)
    col = table[0].index(column)
    write_rows(path, [r[:col] + r[col + 1 :] for r in table])


def edit_schema(d: Path, dataset_type: str, edit: Callable[[dict], object]) -> None:
    path = d / "schemas" / f"{dataset_type}.json"
    doc = edit(json.loads(path.read_text()))
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))


def field_type(name: str, new_type, **extra) -> Callable[[dict], dict]:
    def edit(doc):
        doc["fields"] = [{**f, "type": new_type, **extra} if f["name"] == name else f for f in doc["fields"]]
        return doc

    return edit


def to_parquet(d: Path, name: str = "interactions", then: Callable[[Path], None] | None = None) -> None:
    df = pd.read_csv(d / f"{name}.csv", dtype=str, keep_default_na=False)
    (d / f"{name}.csv").unlink()
    path = d / f"{name}.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    if then:
        then(path)


def to_gzip(d: Path, name: str = "interactions", data: bytes | None = None) -> Path:
    raw = (d / f"{name}.csv").read_bytes() if data is None else data
    (d / f"{name}.csv").unlink()
    path = d / f"{name}.csv.gz"
    path.write_bytes(gzip.compress(raw, mtime=0))
    return path


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def replace_line(path: Path, file_line: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[file_line - 1] = text
    path.write_text("\n".join(lines) + "\n")


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def earlier(demo_small, tmp_path_factory) -> Path:
    """Outputs of earlier good runs, all under one root: a solution ``S`` and a batch
    output ``out/job.jsonl.out``. Failing commands aim at these same locations."""
    root = tmp_path_factory.mktemp("earlier")
    assert (
        cli.main(["train", "--dataset", str(demo_small), "--recipe", RECIPE, "--no-validate", "--out", str(root / "S")])
        == 0
    )
    job = tmp_path_factory.mktemp("job") / "job.jsonl"
    job.write_text("".join(json.dumps({"userId": f"u{i:06d}"}) + "\n" for i in range(1, 6)))
    assert (
        cli.main(["batch-infer", "--solution", str(root / "S"), "--input", str(job), "--output", str(root / "out")])
        == 0
    )
    assert (root / "out" / "job.jsonl.out").is_file()
    return root


@pytest.fixture(autouse=True)
def _plain_env(monkeypatch):
    monkeypatch.delenv("PERSONALIZE_DEBUG", raising=False)
    monkeypatch.delenv("PERSONALIZE_PROGRESS", raising=False)


# --- bad datasets: `train --out <earlier solution>` ----------------------------------------------------

INTERACTIONS_CSV, ITEMS_CSV, USERS_CSV = "interactions.csv", "items.csv", "users.csv"

# (id, how to break a copy of the demo dataset group, what the error line must name)
BAD_DATA: list[tuple[str, Callable[[Path], None], list[str]]] = [
    # missing required columns
    ("interactions-no-USER_ID", lambda d: drop_column(d / INTERACTIONS_CSV, "USER_ID"), [INTERACTIONS_CSV, "USER_ID"]),
    (
        "interactions-no-ITEM_ID-no-schema",
        lambda d: (shutil.rmtree(d / "schemas"), drop_column(d / INTERACTIONS_CSV, "ITEM_ID")),
        [INTERACTIONS_CSV, "ITEM_ID"],
    ),
    ("items-no-ITEM_ID", lambda d: drop_column(d / ITEMS_CSV, "ITEM_ID"), [ITEMS_CSV, "ITEM_ID"]),
    (
        "users-no-USER_ID-no-schema",
        lambda d: (shutil.rmtree(d / "schemas"), drop_column(d / USERS_CSV, "USER_ID")),
        [USERS_CSV, "USER_ID"],
    ),
    # wrong types
    (
        "text-in-CREATION_TIMESTAMP",
        lambda d: set_cell(d / ITEMS_CSV, "CREATION_TIMESTAMP", 4, "soon"),
        [ITEMS_CSV, "CREATION_TIMESTAMP", "line 4", "soon"],
    ),
    (
        "text-in-items-float-field",
        lambda d: set_cell(d / ITEMS_CSV, "PRICE", 6, "cheap"),
        [ITEMS_CSV, "PRICE", "line 6", "cheap"],
    ),
    (
        "decimal-TIMESTAMP",
        lambda d: set_cell(d / INTERACTIONS_CSV, "TIMESTAMP", 11, "1672623252.5"),
        [INTERACTIONS_CSV, "TIMESTAMP", "line 11"],
    ),
    (
        "nan-EVENT_VALUE",
        lambda d: set_cell(d / INTERACTIONS_CSV, "EVENT_VALUE", 3, "nan"),
        [INTERACTIONS_CSV, "EVENT_VALUE", "line 3"],
    ),
    (
        "text-in-parquet-TIMESTAMP",
        lambda d: (set_cell(d / INTERACTIONS_CSV, "TIMESTAMP", 9, "noon"), to_parquet(d)),
        ["interactions.parquet", "TIMESTAMP", "noon"],
    ),
    # null or empty ids
    (
        "empty-ITEM_ID",
        lambda d: set_cell(d / INTERACTIONS_CSV, "ITEM_ID", 7, ""),
        [INTERACTIONS_CSV, "ITEM_ID", "line 7", "empty"],
    ),
    (
        "blank-USER_ID",
        lambda d: set_cell(d / INTERACTIONS_CSV, "USER_ID", 8, "   "),
        [INTERACTIONS_CSV, "USER_ID", "line 8", "empty"],
    ),
    (
        "empty-items-ITEM_ID",
        lambda d: set_cell(d / ITEMS_CSV, "ITEM_ID", 5, ""),
        [ITEMS_CSV, "ITEM_ID", "line 5", "empty"],
    ),
    (
        "empty-users-USER_ID",
        lambda d: set_cell(d / USERS_CSV, "USER_ID", 5, ""),
        [USERS_CSV, "USER_ID", "line 5", "empty"],
    ),
    (
        "empty-id-in-parquet",
        lambda d: (set_cell(d / INTERACTIONS_CSV, "USER_ID", 4, " "), to_parquet(d)),
        ["interactions.parquet", "USER_ID", "empty"],
    ),
    # timestamps in milliseconds or in the future
    (
        "future-TIMESTAMP",
        lambda d: set_cell(d / INTERACTIONS_CSV, "TIMESTAMP", 12, FUTURE),
        [INTERACTIONS_CSV, "TIMESTAMP", "line 12", "future"],
    ),
    (
        "negative-TIMESTAMP",
        lambda d: set_cell(d / INTERACTIONS_CSV, "TIMESTAMP", 12, "-5"),
        [INTERACTIONS_CSV, "TIMESTAMP", "line 12"],
    ),
    (
        "ms-CREATION_TIMESTAMP",
        lambda d: set_cell(d / ITEMS_CSV, "CREATION_TIMESTAMP", 3, "1634100960000"),
        [ITEMS_CSV, "CREATION_TIMESTAMP", "milliseconds"],
    ),
    (
        "future-CREATION_TIMESTAMP",
        lambda d: set_cell(d / ITEMS_CSV, "CREATION_TIMESTAMP", 3, FUTURE),
        [ITEMS_CSV, "CREATION_TIMESTAMP", "future"],
    ),
    # duplicate headers, empty and header-only files
    (
        "duplicate-items-header",
        lambda d: replace_line(d / ITEMS_CSV, 1, "ITEM_ID,GENRE,GENRE,CREATION_TIMESTAMP"),
        [ITEMS_CSV, "GENRE", "twice"],
    ),
    (
        "empty-header-name",
        lambda d: replace_line(d / USERS_CSV, 1, "USER_ID,,MEMBERSHIP"),
        [USERS_CSV, "#2", "empty name"],
    ),
    ("empty-items-file", lambda d: (d / ITEMS_CSV).write_bytes(b""), [ITEMS_CSV, "empty"]),
    ("blank-lines-only", lambda d: (d / INTERACTIONS_CSV).write_text("\n \n\n"), [INTERACTIONS_CSV, "empty"]),
    ("header-only-users", lambda d: write_rows(d / USERS_CSV, rows(d / USERS_CSV)[:1]), [USERS_CSV, "no data rows"]),
    (
        "header-only-gzip",
        lambda d: to_gzip(d, data=(d / INTERACTIONS_CSV).read_bytes().split(b"\n", 1)[0] + b"\n"),
        ["interactions.csv.gz", "no data rows"],
    ),
    # non-UTF-8 bytes
    (
        "non-utf8-header",
        lambda d: (d / INTERACTIONS_CSV).write_bytes(b"USER_\xffID" + (d / INTERACTIONS_CSV).read_bytes()[7:]),
        [INTERACTIONS_CSV, "line 1", "UTF-8"],
    ),
    (
        "non-utf8-items",
        lambda d: (d / ITEMS_CSV).write_bytes((d / ITEMS_CSV).read_bytes().replace(b"Action", b"Act\xe9on", 1)),
        [ITEMS_CSV, "UTF-8", "0xe9"],
    ),
    (
        "utf16-file",
        lambda d: (d / INTERACTIONS_CSV).write_bytes((d / INTERACTIONS_CSV).read_text().encode("utf-16")),
        [INTERACTIONS_CSV, "UTF-8"],
    ),
    (
        "non-utf8-inside-gzip",
        lambda d: to_gzip(d, data=(d / INTERACTIONS_CSV).read_bytes().replace(b"mobile", b"mob\xffile", 1)),
        ["interactions.csv.gz", "UTF-8", "line"],
    ),
    # truncated or corrupted compression and Parquet
    (
        "gzip-bad-crc",
        lambda d: (lambda p: p.write_bytes(p.read_bytes()[:-8] + b"\0\0\0\0" + p.read_bytes()[-4:]))(to_gzip(d)),
        ["interactions.csv.gz", "gzip"],
    ),
    ("gzip-flipped-bytes", lambda d: flip_bytes(to_gzip(d)), ["interactions.csv.gz", "gzip"]),
    (
        "gzip-empty-file",
        lambda d: ((d / INTERACTIONS_CSV).unlink(), (d / "interactions.csv.gz").write_bytes(b"")),
        ["interactions.csv.gz", "empty"],
    ),
    (
        "items-gzip-truncated",
        lambda d: (lambda p: p.write_bytes(p.read_bytes()[:60]))(to_gzip(d, "items")),
        ["items.csv.gz", "gzip"],
    ),
    ("parquet-flipped-bytes", lambda d: to_parquet(d, then=flip_bytes), ["interactions.parquet", "Parquet"]),
    (
        "parquet-truncated",
        lambda d: to_parquet(d, then=lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
        ["interactions.parquet", "Parquet"],
    ),
    (
        "parquet-not-parquet",
        lambda d: to_parquet(d, then=lambda p: p.write_text("USER_ID,ITEM_ID\n")),
        ["interactions.parquet", "Parquet"],
    ),
    (
        "parquet-empty-file",
        lambda d: to_parquet(d, "items", then=lambda p: p.write_bytes(b"")),
        ["items.parquet", "Parquet"],
    ),
    (
        "parquet-no-rows",
        lambda d: to_parquet(d, then=lambda p: pq.write_table(pq.read_table(p).slice(0, 0), p)),
        ["interactions.parquet", "no data rows"],
    ),
    (
        "parquet-nested-column",
        lambda d: to_parquet(
            d, then=lambda p: pq.write_table(pq.read_table(p).append_column("TAGS", pa.array([[1, 2]] * 6000)), p)
        ),
        ["interactions.parquet", "list"],
    ),
    # inconsistent column counts
    (
        "missing-fields",
        lambda d: replace_line(d / INTERACTIONS_CSV, 6, "u000001,i000001,1672623252"),
        [INTERACTIONS_CSV, "line 6", "fields"],
    ),
    (
        "items-extra-field",
        lambda d: replace_line(d / ITEMS_CSV, 9, "i000008,Drama,9.99,1634100960,extra"),
        [ITEMS_CSV, "line 9", "fields"],
    ),
    (
        "unclosed-quote",
        lambda d: replace_line(d / INTERACTIONS_CSV, 5, '"u000001,i000001,1672623252,click,1,,mobile'),
        [INTERACTIONS_CSV, "line 5", "quote"],
    ),
    # schema JSON invalid, or disagreeing with the data
    (
        "schema-empty-file",
        lambda d: edit_schema(d, "interactions", lambda doc: ""),
        ["schemas/interactions.json", "JSON"],
    ),
    ("schema-a-list", lambda d: edit_schema(d, "items", lambda doc: "[1, 2]"), ["schemas/items.json", "record"]),
    (
        "schema-not-utf8",
        lambda d: (d / "schemas" / "users.json").write_bytes(b"\xff\xfe{}"),
        ["schemas/users.json", "JSON"],
    ),
    (
        "schema-a-folder",
        lambda d: ((d / "schemas" / "items.json").unlink(), (d / "schemas" / "items.json").mkdir()),
        ["schemas/items.json", "folder"],
    ),
    (
        "schema-TIMESTAMP-as-string",
        lambda d: edit_schema(d, "interactions", field_type("TIMESTAMP", "string")),
        ["schemas/interactions.json", "TIMESTAMP", "long"],
    ),
    (
        "schema-unknown-type",
        lambda d: edit_schema(d, "interactions", field_type("DEVICE", "decimal")),
        ["schemas/interactions.json", "DEVICE", "decimal"],
    ),
    (
        "schema-nullable-USER_ID",
        lambda d: edit_schema(d, "interactions", field_type("USER_ID", ["null", "string"])),
        ["schemas/interactions.json", "USER_ID", "nullable"],
    ),
    (
        "schema-without-ITEM_ID",
        lambda d: edit_schema(d, "items", lambda doc: {**doc, "fields": doc["fields"][1:]}),
        ["schemas/items.json", "ITEM_ID"],
    ),
    (
        "schema-field-without-type",
        lambda d: edit_schema(d, "users", lambda doc: {**doc, "fields": doc["fields"] + [{"name": "X"}]}),
        ["schemas/users.json", "X", "type"],
    ),
    (
        "data-has-undeclared-column",
        lambda d: edit_schema(d, "interactions", lambda doc: {**doc, "fields": doc["fields"][:-1]}),
        [INTERACTIONS_CSV, "DEVICE"],
    ),
    (
        "schema-int-for-text-column",
        lambda d: edit_schema(d, "interactions", field_type("DEVICE", "int", categorical=False)),
        [INTERACTIONS_CSV, "DEVICE", "integers", "line 2"],
    ),
    (
        "schema-boolean-for-numbers",
        lambda d: edit_schema(d, "items", field_type("PRICE", "boolean")),
        [ITEMS_CSV, "PRICE", "true or false"],
    ),
    # a file where a folder is expected and the other way round
    (
        "interactions-is-a-folder",
        lambda d: ((d / INTERACTIONS_CSV).unlink(), (d / INTERACTIONS_CSV).mkdir()),
        [INTERACTIONS_CSV, "folder"],
    ),
    # under Personalize's minimums, in Parquet too
    (
        "parquet-under-1000-interactions",
        lambda d: (write_rows(d / INTERACTIONS_CSV, rows(d / INTERACTIONS_CSV)[:500]), to_parquet(d)),
        ["interactions.parquet", "1000 interactions"],
    ),
]


@pytest.mark.parametrize("break_it, needles", [pytest.param(f, n, id=i) for i, f, n in BAD_DATA])
def test_bad_dataset(demo_small, earlier, tmp_path, capsys, break_it, needles):
    d = tmp_path / "D"
    shutil.copytree(demo_small, d)
    break_it(d)
    before = digest(earlier)
    rc, out, err = call(capsys, "train", "--dataset", d, "--recipe", RECIPE, "--out", earlier / "S")
    check_one_line(rc, out, err, needles)
    assert digest(earlier) == before


# --- bad options, solutions and locations ------------------------------------------------------------


def _damaged_solution(earlier: Path, tmp: Path, damage: Callable[[Path, Path], None]) -> Path:
    """A copy of the earlier solution with one thing broken; damage(solution, version)."""
    s = tmp / "damaged"
    shutil.copytree(earlier / "S", s)
    latest = json.loads((s / "solution.json").read_text())["latest"]
    damage(s, s / "versions" / latest)
    return s


def _job(tmp: Path) -> Path:
    """A good batch input with the same name as the earlier job, so its output would land on
    the earlier ``out/job.jsonl.out``."""
    job = tmp / "job.jsonl"
    job.write_text('{"userId": "u000001"}\n{"userId": "u000002"}\n')
    return job


def _train(demo: Path, out, *extra) -> list:
    return ["train", "--dataset", demo, "--recipe", RECIPE, *extra, "--out", out]


def _batch(earlier: Path, tmp: Path, *extra, solution=None, output=None) -> list:
    return [
        "batch-infer",
        "--solution",
        solution or earlier / "S",
        "--input",
        _job(tmp),
        "--output",
        output or earlier / "out",
        *extra,
    ]


INCLUDE_GENRE = "INCLUDE ItemID WHERE Items.GENRE IN ($GENRES)"

# (id, args builder (demo, earlier outputs, tmp) -> argv, what the error line must name)
BAD_OPTIONS: list[tuple[str, Callable[[Path, Path, Path], list], list[str]]] = [
    # unknown recipes, unknown hyperparameters, out-of-range values
    ("recipe-empty", lambda d, e, t: ["train", "--dataset", d, "--recipe", "", "--out", e / "S"], ["unknown recipe"]),
    (
        "recipe-arn-of-a-solution",
        lambda d, e, t: [
            "train",
            "--dataset",
            d,
            "--recipe",
            "arn:aws:personalize:::solution/aws-hrnn",
            "--out",
            e / "S",
        ],
        ["unknown recipe", "solution/aws-hrnn"],
    ),
    (
        "hp-too-large",
        lambda d, e, t: [
            "train",
            "--dataset",
            d,
            "--recipe",
            "aws-hrnn",
            "--hp",
            "hidden_dimension=100000",
            "--out",
            e / "S",
        ],
        ["hidden_dimension", "100000", "range"],
    ),
    (
        "hp-zero-bptt",
        lambda d, e, t: ["train", "--dataset", d, "--recipe", "aws-hrnn", "--hp", "bptt=0", "--out", e / "S"],
        ["bptt", "range"],
    ),
    (
        "hp-text-for-int",
        lambda d, e, t: [
            "train",
            "--dataset",
            d,
            "--recipe",
            "aws-hrnn",
            "--hp",
            "hidden_dimension=lots",
            "--out",
            e / "S",
        ],
        ["hidden_dimension", "lots"],
    ),
    (
        "hp-float-for-int",
        lambda d, e, t: [
            "train",
            "--dataset",
            d,
            "--recipe",
            "aws-hrnn",
            "--hp",
            "hidden_dimension=64.5",
            "--out",
            e / "S",
        ],
        ["hidden_dimension", "64.5"],
    ),
    (
        "hp-not-a-bool",
        lambda d, e, t: [
            "train",
            "--dataset",
            d,
            "--recipe",
            "aws-hrnn",
            "--hp",
            "recency_mask=maybe",
            "--out",
            e / "S",
        ],
        ["recency_mask", "maybe"],
    ),
    (
        "hp-nan",
        lambda d, e, t: [
            "train",
            "--dataset",
            d,
            "--recipe",
            "aws-hrnn",
            "--hp",
            "learning_rate=nan",
            "--out",
            e / "S",
        ],
        ["learning_rate", "nan"],
    ),
    (
        "hp-percentile-above-1",
        lambda d, e, t: [
            "train",
            "--dataset",
            d,
            "--recipe",
            "aws-sims",
            "--hp",
            "max_item_interaction_count_percentile=1.5",
            "--out",
            e / "S",
        ],
        ["max_item_interaction_count_percentile", "range"],
    ),
    (
        "hp-not-a-choice",
        lambda d, e, t: [
            "train",
            "--dataset",
            d,
            "--recipe",
            "aws-hrnn-coldstart",
            "--hp",
            "cold_start_relative_from=tomorrow",
            "--out",
            e / "S",
        ],
        ["cold_start_relative_from", "tomorrow"],
    ),
    (
        "hp-unknown-for-this-recipe",
        lambda d, e, t: _train(d, e / "S", "--hp", "hidden_dimension=64"),
        ["hidden_dimension", RECIPE],
    ),
    (
        "evaluate-hp-out-of-range",
        lambda d, e, t: ["evaluate", "--dataset", d, "--recipe", "aws-hrnn", "--hp", "epochs=-1", "--json"],
        ["epochs", "range"],
    ),
    (
        "event-value-threshold-nan",
        lambda d, e, t: _train(d, e / "S", "--event-value-threshold", "nan"),
        ["EVENT_VALUE", "nan"],
    ),
    (
        "event-value-threshold-too-high",
        lambda d, e, t: _train(d, e / "S", "--event-value-threshold", "1e9"),
        ["EVENT_VALUE"],
    ),
    ("seed-not-a-number", lambda d, e, t: _train(d, e / "S", "--seed", "x"), ["--seed", "x"]),
    # UPDATE without a usable FULL version
    (
        "update-base-index-damaged",
        lambda d, e, t: _train(
            d,
            t / "new",
            "--training-mode",
            "UPDATE",
            "--base",
            _damaged_solution(e, t, lambda s, v: (s / "solution.json").write_text("[]")),
        ),
        ["UPDATE", "FULL", "solution.json"],
    ),
    (
        "update-base-manifest-damaged",
        lambda d, e, t: _train(
            d,
            t / "new",
            "--training-mode",
            "UPDATE",
            "--base",
            _damaged_solution(e, t, lambda s, v: (v / "manifest.json").write_text("{")),
        ),
        ["UPDATE", "FULL", "manifest.json"],
    ),
    (
        "update-base-of-another-recipe",
        lambda d, e, t: [
            "train",
            "--dataset",
            d,
            "--recipe",
            "aws-sims",
            "--training-mode",
            "UPDATE",
            "--base",
            e / "S",
            "--out",
            t / "new",
        ],
        ["UPDATE", "aws-sims", RECIPE],
    ),
    # damaged solutions given to batch inference or trained into
    (
        "solution-index-not-an-object",
        lambda d, e, t: _batch(
            e, t, solution=_damaged_solution(e, t, lambda s, v: (s / "solution.json").write_text("[]"))
        ),
        ["solution.json", "solution index"],
    ),
    (
        "solution-latest-escapes",
        lambda d, e, t: _batch(
            e,
            t,
            solution=_damaged_solution(
                e,
                t,
                lambda s, v: (s / "solution.json").write_text(json.dumps({"versions": [], "latest": "../../../etc"})),
            ),
        ),
        ["../../../etc", "would leave"],
    ),
    (
        "solution-manifest-a-list",
        lambda d, e, t: _batch(
            e, t, solution=_damaged_solution(e, t, lambda s, v: (v / "manifest.json").write_text("[]"))
        ),
        ["manifest.json", "manifest"],
    ),
    (
        "solution-model-missing",
        lambda d, e, t: _batch(e, t, solution=_damaged_solution(e, t, lambda s, v: (v / "model.npz").unlink())),
        ["model.npz", "not found"],
    ),
    (
        "solution-model-garbage",
        lambda d, e, t: _batch(
            e, t, solution=_damaged_solution(e, t, lambda s, v: (v / "model.npz").write_bytes(b"junk"))
        ),
        ["damaged"],
    ),
    (
        "solution-catalog-garbage",
        lambda d, e, t: _batch(
            e, t, solution=_damaged_solution(e, t, lambda s, v: (v / "catalog.parquet").write_bytes(b"junk"))
        ),
        ["damaged", "Parquet"],
    ),
    (
        "train-into-damaged-index",
        lambda d, e, t: _train(
            d, _damaged_solution(e, t, lambda s, v: (s / "solution.json").write_text('{"versions": 3}'))
        ),
        ["solution.json", "solution index"],
    ),
    # bad filter expressions and missing filter values
    ("filter-empty", lambda d, e, t: _batch(e, t, "--filter", "  "), ["--filter", "empty"]),
    (
        "filter-garbage",
        lambda d, e, t: _batch(e, t, "--filter", "SHOW ME THE GOOD ONES"),
        ["filter expression", "position 1"],
    ),
    (
        "filter-unclosed-list",
        lambda d, e, t: _batch(e, t, "--filter", 'EXCLUDE ItemID WHERE Items.GENRE IN ("Action"'),
        ["filter expression", "position"],
    ),
    (
        "filter-unknown-field",
        lambda d, e, t: _batch(e, t, "--filter", 'INCLUDE ItemID WHERE Items.COLOR IN ("red")'),
        ["Items.COLOR"],
    ),
    (
        "filter-unknown-dataset",
        lambda d, e, t: _batch(e, t, "--filter", 'INCLUDE ItemID WHERE Movies.GENRE IN ("Drama")'),
        ["Movies"],
    ),
    (
        "filter-range-on-text",
        lambda d, e, t: _batch(e, t, "--filter", "INCLUDE ItemID WHERE Items.GENRE > 3"),
        ["Items.GENRE", "numeric"],
    ),
    ("filter-values-missing", lambda d, e, t: _batch(e, t, "--filter", INCLUDE_GENRE), ["$GENRES", "missing"]),
    (
        "filter-values-other-name",
        lambda d, e, t: _batch(e, t, "--filter", INCLUDE_GENRE, "--filter-values", '{"GENRE": "\\"Drama\\""}'),
        ["$GENRES", "missing"],
    ),
    (
        "filter-values-not-an-object",
        lambda d, e, t: _batch(e, t, "--filter", INCLUDE_GENRE, "--filter-values", '["Drama"]'),
        ["--filter-values", "object"],
    ),
    (
        "filter-values-not-a-number",
        lambda d, e, t: _batch(
            e, t, "--filter", "INCLUDE ItemID WHERE Items.PRICE < $MAX", "--filter-values", '{"MAX": "cheap"}'
        ),
        ["$MAX", "number", "cheap"],
    ),
    (
        "filter-values-without-filter",
        lambda d, e, t: _batch(e, t, "--filter-values", '{"GENRES": "\\"Drama\\""}'),
        ["--filter-values", "--filter"],
    ),
    (
        "exploration-cut-off-negative",
        lambda d, e, t: _batch(e, t, "--exploration-item-age-cut-off", "-1"),
        ["--exploration-item-age-cut-off"],
    ),
    (
        "exploration-weight-negative",
        lambda d, e, t: _batch(e, t, "--exploration-weight", "-0.1"),
        ["explorationWeight"],
    ),
    # unwritable or nonexistent output locations
    (
        "batch-output-under-a-file",
        lambda d, e, t: _batch(e, t, output=e / "out" / "job.jsonl.out" / "sub"),
        ["job.jsonl.out", "file"],
    ),
    (
        "batch-output-not-creatable",
        lambda d, e, t: _batch(e, t, output="/proc/no-such-dir/out"),
        ["/proc/no-such-dir/out"],
    ),
    ("batch-output-read-only-fs", lambda d, e, t: _batch(e, t, output="/sys/no-such-dir"), ["/sys/no-such-dir"]),
    ("batch-output-empty", lambda d, e, t: _batch(e, t, output=" "), ["empty location"]),
    ("batch-output-s3-without-bucket", lambda d, e, t: _batch(e, t, output="s3://"), ["s3://", "bucket"]),
    ("batch-output-unknown-scheme", lambda d, e, t: _batch(e, t, output="gs://bucket/out"), ["gs://", "scheme"]),
    (
        "batch-input-unknown-scheme",
        lambda d, e, t: [
            "batch-infer",
            "--solution",
            e / "S",
            "--input",
            "ftp://host/job.jsonl",
            "--output",
            e / "out",
        ],
        ["ftp://", "scheme"],
    ),
    ("train-out-under-a-file", lambda d, e, t: _train(d, e / "out" / "job.jsonl.out" / "S"), ["job.jsonl.out", "file"]),
    ("train-out-not-creatable", lambda d, e, t: _train(d, "/proc/no-such-dir/S"), ["/proc/no-such-dir/S", "--out"]),
    ("train-out-read-only-fs", lambda d, e, t: _train(d, "/sys/no-such-dir/S"), ["/sys/no-such-dir/S", "--out"]),
    (
        "demo-data-out-is-a-file",
        lambda d, e, t: ["demo-data", "--out", e / "out" / "job.jsonl.out"],
        ["job.jsonl.out", "file"],
    ),
    (
        "demo-data-out-not-creatable",
        lambda d, e, t: ["demo-data", "--out", "/proc/no-such-dir/D"],
        ["/proc/no-such-dir/D"],
    ),
]


@pytest.mark.parametrize("make_args, needles", [pytest.param(f, n, id=i) for i, f, n in BAD_OPTIONS])
def test_bad_option_or_location(demo_small, earlier, tmp_path, capsys, make_args, needles):
    args = make_args(demo_small, earlier, tmp_path)
    before = digest(earlier)
    rc, out, err = call(capsys, *args)
    check_one_line(rc, out, err, needles)
    assert digest(earlier) == before
    assert not (tmp_path / "new").exists()  # a refused UPDATE creates no solution folder


def test_real_script_on_a_corrupt_parquet_file(demo_small, earlier, tmp_path):
    """The console script end to end: one line, exit 2, earlier outputs byte-identical."""
    d = tmp_path / "D"
    shutil.copytree(demo_small, d)
    to_parquet(d, then=flip_bytes)
    before = digest(earlier)
    env = {k: v for k, v in os.environ.items() if k not in ("PERSONALIZE_DEBUG", "PERSONALIZE_PROGRESS")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "personalize_pipeline.cli",
            "train",
            "--dataset",
            str(d),
            "--recipe",
            RECIPE,
            "--out",
            str(earlier / "S"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    check_one_line(proc.returncode, proc.stdout, proc.stderr, ["interactions.parquet"])
    assert digest(earlier) == before


# --- per-line problems in batch input: the line's error field, the job goes on ----------------------


def test_bad_lines_are_reported_per_line_and_the_job_goes_on(earlier, tmp_path, capsys):
    lines = [
        '\ufeff{"userId": "u000001"}',  # a byte order mark on the first line is not an error
        json.dumps({"userId": "u000002", "filterValues": ["Drama"]}),
        json.dumps({"userId": "u000003", "filterValues": {}}),
        json.dumps({"userId": "u000004", "filterValues": {"GENRES": '"Drama"'}}),
        "{truncated",
        json.dumps({"user": "u000005"}),
        json.dumps({"userId": None}),
        json.dumps({"userId": "nobody-we-know"}),
    ]
    job = tmp_path / "mixed.jsonl"
    job.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    out_dir = tmp_path / "o"
    rc, out, err = call(
        capsys,
        "batch-infer",
        "--solution",
        earlier / "S",
        "--input",
        job,
        "--output",
        out_dir,
        "--num-results",
        3,
        "--filter",
        INCLUDE_GENRE,
        "--filter-values",
        '{"GENRES": "\\"Comedy\\""}',
    )
    assert rc == 0, err
    assert "Traceback" not in out + err
    result = [json.loads(line) for line in (out_dir / "mixed.jsonl.out").read_text().splitlines()]
    assert len(result) == len(lines) and json.loads(out)["errors"] == 5
    expected_errors = {1: "filterValues", 2: "$GENRES", 4: "invalid JSON", 5: "userId", 6: "userId"}
    for i, row in enumerate(result):
        if i in expected_errors:
            assert row["output"] is None and f"line {i + 1}" in row["error"] and expected_errors[i] in row["error"], row
        else:
            assert row["error"] is None and 0 < len(row["output"]["recommendedItems"]) <= 3, row
    assert result[0]["input"] == {"userId": "u000001"}
    assert result[7]["input"] == {"userId": "nobody-we-know"}  # unknown users still get recommendations


def test_ranking_and_related_items_lines_are_checked():
    """Per-line checks for the other recipe types: lists over the 500-item limit, empty
    lists, wrong keys."""
    ranking = "PERSONALIZED_RANKING"
    assert parse_line(json.dumps({"userId": "u1", "itemList": ["a", "b"]}), 1, ranking)[2] is None
    cases = [
        ({"userId": "u1", "itemList": [f"i{k}" for k in range(501)]}, ranking, "501 items; at most 500"),
        ({"userId": "u1", "itemList": []}, ranking, "non-empty list"),
        ({"userId": "u1", "itemList": "i1"}, ranking, "non-empty list"),
        ({"userId": "u1", "itemList": ["i1", None]}, ranking, "only non-empty item ids"),
        ({"userId": "u1"}, ranking, "itemList"),
        ({"userId": "u1"}, "RELATED_ITEMS", "itemId"),
        ({"itemId": ""}, "RELATED_ITEMS", "itemId"),
        ({"userId": "u1", "itemList": ["i1"]}, "USER_PERSONALIZATION", "PERSONALIZED_RANKING"),
    ]
    for obj, kind, needle in cases:
        _obj, _key, error = parse_line(json.dumps(obj), 7, kind)
        assert error is not None and error.startswith("line 7: ") and needle in error, (obj, error)


# --- paths from user input cannot leave the output root --------------------------------------------


@pytest.mark.parametrize(
    "part", ["..", "../elsewhere", "a/../../b", "/etc", "", " ", ".", "./.", "..\\up", "nul\0byte"]
)
def test_names_cannot_escape_the_root(tmp_path, part):
    root = Location(str(tmp_path / "root"))
    with pytest.raises(InputError, match="would leave"):
        root.child(part)
    with pytest.raises(InputError, match="would leave"):
        Location("s3://bucket/root").child("solutions", part)


def test_batch_output_lands_under_the_output_root(earlier, tmp_path, capsys):
    """The output name comes from the input file's name only, never its folders."""
    (tmp_path / "deep" / "er").mkdir(parents=True)
    job = tmp_path / "deep" / "er" / "j.jsonl"
    job.write_text('{"userId": "u000001"}\n')
    out_root = tmp_path / "deep" / "out"
    tricky_input = f"{tmp_path}/deep/er/../er/./j.jsonl"
    rc, out, err = call(
        capsys, "batch-infer", "--solution", earlier / "S", "--input", tricky_input, "--output", out_root
    )
    assert rc == 0, err
    assert [p.relative_to(tmp_path) for p in sorted(tmp_path.rglob("*.out"))] == [Path("deep/out/j.jsonl.out")]
    assert load_solution_version(earlier / "S").version_id  # the earlier solution still loads
