import json
import shutil
import time

import pandas as pd
import pytest

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.errors import InputError
from personalize_pipeline.schemas import parse_avro
from personalize_pipeline.validation import validate


@pytest.fixture
def group_dir(demo_small, tmp_path):
    d = tmp_path / "group"
    shutil.copytree(demo_small, d)
    return d


def _edit(path, fn):
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df = fn(df)
    df.to_csv(path, index=False)


def test_demo_and_shared_datasets_pass(demo_small):
    for location in (demo_small, "tests/data/movielens-slice", "tests/data/airline-slice"):
        report = validate(read_dataset_group(location))
        assert report.success, report.to_text()


def test_text_in_timestamp_names_column_rule_and_line(group_dir):
    def bad(df):
        df.loc[4, "TIMESTAMP"] = "yesterday"
        return df

    _edit(group_dir / "interactions.csv", bad)
    report = validate(read_dataset_group(group_dir))
    assert not report.success
    [failure] = [r for r in report.failures if r.column == "TIMESTAMP" and "integers" in r.description]
    assert failure.unexpected_count == 1
    assert failure.examples == ["yesterday"] and failure.lines == [6]
    assert "interactions.csv: column TIMESTAMP" in failure.message() and "line 6: 'yesterday'" in failure.message()


def test_milliseconds_and_future_timestamps_fail(group_dir):
    _edit(
        group_dir / "interactions.csv",
        lambda df: df.assign(TIMESTAMP=(df["TIMESTAMP"].astype("int64") * 1000).astype(str)),
    )
    report = validate(read_dataset_group(group_dir))
    rule = [r for r in report.failures if r.column == "TIMESTAMP"]
    assert rule and "milliseconds" in rule[0].description
    assert rule[0].unexpected_count == rule[0].element_count


def test_minimums(group_dir):
    _edit(group_dir / "interactions.csv", lambda df: df.head(500))
    report = validate(read_dataset_group(group_dir))
    assert any("at least 1000 interactions" in r.description for r in report.failures)

    _edit(group_dir / "interactions.csv", lambda df: pd.concat([df] * 3).assign(USER_ID="only-one"))
    report = validate(read_dataset_group(group_dir))
    [r] = [r for r in report.failures if "25 users" in r.description]
    assert r.observed == 0 or r.observed == 1


def test_schema_file_must_match_columns(group_dir):
    schema = json.loads((group_dir / "schemas" / "items.json").read_text())
    schema["fields"].append({"name": "BRAND", "type": "string", "categorical": True})
    (group_dir / "schemas" / "items.json").write_text(json.dumps(schema))
    report = validate(read_dataset_group(group_dir))
    [r] = [r for r in report.failures if r.dataset == "items"]
    assert "BRAND" in r.message()


def test_duplicate_item_ids_are_a_warning_not_a_failure(group_dir):
    _edit(group_dir / "items.csv", lambda df: pd.concat([df, df.head(2)]))
    report = validate(read_dataset_group(group_dir))
    assert report.success
    assert [w.column for w in report.warnings] == ["ITEM_ID"]


def test_nulls_in_ids_fail(group_dir):
    def bad(df):
        df.loc[[1, 2], "USER_ID"] = ""
        return df

    _edit(group_dir / "interactions.csv", bad)
    report = validate(read_dataset_group(group_dir))
    [r] = [r for r in report.failures if r.column == "USER_ID"]
    assert r.unexpected_count == 2


def test_validation_is_reasonably_fast_on_movielens():
    group = read_dataset_group("tests/data/movielens-slice")
    validate(group)  # warm up imports
    start = time.perf_counter()
    validate(group)
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"type": "record"}, "not an Avro record"),
        ({"type": "record", "fields": [{"name": "USER_ID", "type": "string"}]}, "required field 'ITEM_ID'"),
        (
            {
                "type": "record",
                "fields": [
                    {"name": "USER_ID", "type": "string"},
                    {"name": "ITEM_ID", "type": "string"},
                    {"name": "TIMESTAMP", "type": "string"},
                ],
            },
            "TIMESTAMP' must be of type long",
        ),
        ({"type": "record", "fields": [{"name": "USER_ID", "type": "map"}]}, "unsupported type"),
        (
            {
                "type": "record",
                "fields": [
                    {"name": "X", "type": "int", "categorical": True},
                    {"name": "USER_ID", "type": "string"},
                    {"name": "ITEM_ID", "type": "string"},
                    {"name": "TIMESTAMP", "type": "long"},
                ],
            },
            "categorical",
        ),
    ],
)
def test_schema_errors_are_clear(doc, message):
    with pytest.raises(InputError, match=message):
        parse_avro("interactions", doc, "schemas/interactions.json")


def test_schema_accepts_personalize_example():
    doc = {
        "type": "record",
        "name": "Interactions",
        "namespace": "com.amazonaws.personalize.schema",
        "fields": [
            {"name": "USER_ID", "type": "string"},
            {"name": "ITEM_ID", "type": "string"},
            {"name": "EVENT_VALUE", "type": ["null", "float"]},
            {"name": "TIMESTAMP", "type": "long"},
            {"name": "CABIN_TYPE", "type": ["null", "string"], "categorical": True},
        ],
        "version": "1.0",
    }
    schema = parse_avro("interactions", doc, "x")
    assert schema.field("CABIN_TYPE").categorical and schema.field("EVENT_VALUE").nullable
    assert parse_avro("interactions", schema.to_avro(), "y") == schema
