"""The S3 path end to end against a real SeaweedFS server: dataset read from S3, solution
versions written to S3, batch inference through the CLI writing to an s3:// prefix."""

import json
import os
import subprocess
import sys

import pytest

from personalize_pipeline.batch import run_batch_job
from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.errors import InputError
from personalize_pipeline.features import featurize
from personalize_pipeline.locations import Location, S3Options
from personalize_pipeline.store import load_solution_version
from personalize_pipeline.training import SolutionConfig, train


def upload_dir(fs, local, remote):
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"{remote}/{path.relative_to(local)}")


@pytest.fixture
def s3_env(s3_bucket, monkeypatch):
    server, bucket = s3_bucket
    env = {
        "AWS_ENDPOINT_URL": server.endpoint_url,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_REGION": "us-east-1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return server, bucket, env


def test_dataset_train_and_batch_on_s3(demo_small, s3_env, tmp_path):
    server, bucket, _ = s3_env
    fs = server.filesystem("test", "test-secret")
    upload_dir(fs, demo_small, f"{bucket.removeprefix('s3://')}/dataset")
    group = read_dataset_group(f"{bucket}/dataset")
    local = read_dataset_group(demo_small)
    assert group.interactions.num_rows == local.interactions.num_rows
    assert group.interactions.fingerprint == local.interactions.fingerprint
    assert group.items.schema == local.items.schema
    features = featurize(group)
    version = train(features, SolutionConfig(), f"{bucket}/solutions/demo")
    assert version.location.url.startswith(f"{bucket}/solutions/demo/versions/")
    loaded = load_solution_version(f"{bucket}/solutions/demo")
    assert loaded.version_id == version.version_id
    result = run_batch_job(loaded, f"{bucket}/dataset/batch-input/users.jsonl", f"{bucket}/out", num_results=5)
    lines = fs.cat(result.output.removeprefix("s3://")).decode().splitlines()
    assert len(lines) == result.lines > 0
    assert all(len(json.loads(line)["output"]["recommendedItems"]) == 5 for line in lines)
    # nothing temporary left behind
    assert not [p for p in fs.find(bucket.removeprefix("s3://")) if ".tmp-" in p]


def test_cli_batch_infer_writes_to_s3_prefix(demo_small, s3_env, tmp_path):
    server, bucket, env = s3_env
    run_env = {**os.environ, **env}
    cli = [sys.executable, "-m", "personalize_pipeline.cli"]
    train_cmd = cli + [
        "train",
        "--dataset",
        str(demo_small),
        "--recipe",
        "aws-popularity-count",
        "--out",
        f"{bucket}/sol",
    ]
    done = subprocess.run(train_cmd, env=run_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    job = tmp_path / "job.jsonl"
    job.write_text('{"userId": "u000001"}\n{"userId": "nobody"}\n')
    cmd = cli + [
        "batch-infer",
        "--solution",
        f"{bucket}/sol",
        "--input",
        str(job),
        "--output",
        f"{bucket}/batch/out",
        "--num-results",
        "4",
    ]
    done = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    fs = server.filesystem("test", "test-secret")
    rows = [
        json.loads(line)
        for line in fs.cat(f"{bucket.removeprefix('s3://')}/batch/out/job.jsonl.out").decode().splitlines()
    ]
    assert [r["input"]["userId"] for r in rows] == ["u000001", "nobody"]
    assert all(len(r["output"]["recommendedItems"]) == 4 and r["error"] is None for r in rows)


def test_s3_errors_are_one_clear_line(s3_env):
    server, bucket, _ = s3_env
    with pytest.raises(InputError, match="dataset location does not exist"):
        read_dataset_group(f"{bucket}/nothing-here")
    with pytest.raises(InputError, match="bucket 'no-such-bucket-xyz' does not exist"):
        Location("s3://no-such-bucket-xyz/out", S3Options()).makedirs()
    unreachable = S3Options(endpoint_url="http://127.0.0.1:9", access_key_id="a", secret_access_key="b")
    with pytest.raises(InputError) as err:
        Location(f"{bucket}/x", unreachable).exists()
    assert "cannot reach the S3 endpoint" in str(err.value) and "\n" not in str(err.value)
