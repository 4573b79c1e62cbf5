"""Inputs of the scheduled batch inference jobs: a file, every *.jsonl of a folder or S3
prefix, or a default input naming every user (every item for RELATED_ITEMS)."""

import dataclasses
import json

import pytest

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.errors import InputError
from personalize_pipeline.features import featurize
from personalize_pipeline.job_inputs import job_input_files, write_default_input
from personalize_pipeline.locations import Location, S3Options
from personalize_pipeline.store import load_solution_version
from personalize_pipeline.training import SolutionConfig, train


def test_a_file_or_every_jsonl_of_a_folder(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("b.jsonl", "a.jsonl", "notes.txt"):
        (tmp_path / "in" / name).write_text('{"userId": "u1"}\n')
    assert [loc.name for loc in job_input_files(tmp_path / "in")] == ["a.jsonl", "b.jsonl"]
    assert [loc.name for loc in job_input_files(tmp_path / "in" / "notes.txt")] == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: batch inference input folder has no \\*.jsonl file"):
        job_input_files(tmp_path / "empty")
    with pytest.raises(InputError, match="absent: batch inference input does not exist"):
        job_input_files(tmp_path / "absent")


def test_every_jsonl_under_an_s3_prefix(s3_bucket):
    server, bucket = s3_bucket
    fs = server.filesystem("test", "test-secret")
    for name in ("part-1.jsonl", "part-0.jsonl", "_SUCCESS"):
        fs.pipe(f"{bucket.removeprefix('s3://')}/job/{name}", b'{"userId": "u1"}\n')
    files = job_input_files(Location(f"{bucket}/job", S3Options(server.endpoint_url, "test", "test-secret")))
    assert [f.url for f in files] == [f"{bucket}/job/part-0.jsonl", f"{bucket}/job/part-1.jsonl"]


@pytest.mark.parametrize("recipe, key", [("aws-popularity-count", "userId"), ("aws-sims", "itemId")])
def test_default_input_names_every_user_or_item(demo_small, tmp_path, recipe, key):
    train(featurize(read_dataset_group(demo_small)), SolutionConfig(recipe), tmp_path / "solution")
    version = load_solution_version(tmp_path / "solution")
    lines = [json.loads(line) for line in write_default_input(version, tmp_path).read_text().splitlines()]
    expected = version.user_ids if key == "userId" else version.item_ids
    assert [line[key] for line in lines] == [str(i) for i in expected]
    if recipe == "aws-popularity-count":  # a ranking solution needs the items to rank: no default input
        ranking = dataclasses.replace(
            version,
            manifest={**version.manifest, "recipe": "aws-personalized-ranking", "recipe_type": "PERSONALIZED_RANKING"},
        )
        with pytest.raises(
            InputError,
            match="aws-personalized-ranking ranks the items each input line lists: set batch_inference.input",
        ):
            write_default_input(ranking, tmp_path / "ranking")
        assert not (tmp_path / "ranking").exists()
