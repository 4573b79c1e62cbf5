"""Solution-version retention and the batch output ``latest`` pointer, locally and on a real
S3 server (SeaweedFS)."""

import pytest

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.errors import InputError
from personalize_pipeline.features import featurize
from personalize_pipeline.locations import Location, S3Options
from personalize_pipeline.outputs import read_latest, run_output_location, write_latest
from personalize_pipeline.store import load_solution_version, prune_versions, read_index
from personalize_pipeline.training import SolutionConfig, train


@pytest.fixture(scope="module")
def features(demo_small):
    return featurize(read_dataset_group(demo_small))


def _cycle(features, root, keep):
    """FULL, UPDATE, FULL, UPDATE, UPDATE, FULL, UPDATE with retention ``keep``; the ids by mode."""
    config = SolutionConfig("aws-popularity-count")
    made = []
    for mode in ("FULL", "UPDATE", "FULL", "UPDATE", "UPDATE", "FULL", "UPDATE"):
        made.append((mode, train(features, config, root, training_mode=mode, keep_full_versions=keep).version_id))
    return made


def _check_retention(root: Location, made):
    index = read_index(root)
    f1, u1, f2, u2a, u2b, f3, u3 = (v for _, v in made)
    assert [v["id"] for v in index["versions"]] == [f2, u2a, u2b, f3, u3]
    assert index["latest"] == u3 and index["latest_full"] == f3
    files = root.fs.find(root.child("versions").path)  # objects, not (SeaweedFS) empty folders
    assert {f.split("/versions/", 1)[1].split("/")[0] for f in files} == {f2, u2a, u2b, f3, u3}
    assert load_solution_version(root).version_id == u3
    assert load_solution_version(root, full_only=True).version_id == f3


def test_retention_keeps_last_full_versions_and_their_updates(tmp_path, features):
    root = Location(str(tmp_path / "sol"))
    _check_retention(root, _cycle(features, root, keep=2))
    # keep=1 on an existing store: only the latest FULL and its UPDATE remain
    index = read_index(root)
    dropped = prune_versions(root, 1)
    assert dropped == [v["id"] for v in index["versions"][:3]]
    assert [v["id"] for v in read_index(root)["versions"]] == [index["latest_full"], index["latest"]]


def test_retention_never_drops_what_the_index_points_at(tmp_path, features):
    root = Location(str(tmp_path / "sol"))
    config = SolutionConfig("aws-popularity-count")
    full = train(features, config, root)
    for _ in range(3):
        train(features, config, root, training_mode="UPDATE", keep_full_versions=1)
    index = read_index(root)
    assert index["latest_full"] == full.version_id and len(index["versions"]) == 4
    with pytest.raises(InputError, match="keep_full_versions must be at least 1"):
        train(features, config, root, keep_full_versions=0)
    assert read_index(root) == index


def test_retention_and_latest_pointer_on_s3(s3_bucket, features):
    server, bucket = s3_bucket
    s3 = S3Options(server.endpoint_url, "test", "test-secret")
    root = Location(f"{bucket}/artifacts/solutions/demo", s3)
    _check_retention(root, _cycle(features, root, keep=2))

    out = Location(f"{bucket}/output", s3)
    folder = run_output_location(out, "demo", "v1", "run-a")
    folder.child("users.jsonl.out").write_text("{}\n")
    write_latest(out, "demo", "v1", "run-a", folder.child("users.jsonl.out").url, lines=1)
    write_latest(out, "demo", "v2", "run-b", "s3://x/y.out")
    latest = read_latest(out, "demo")
    assert latest["solution_version"] == "v2" and latest["run_id"] == "run-b"
    assert latest["folder"] == f"{bucket}/output/demo/v2/run-b"
    fs = server.filesystem("test", "test-secret")
    assert [p for p in fs.find(bucket.removeprefix("s3://")) if ".tmp-" in p] == []
