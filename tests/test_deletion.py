import gzip
import hashlib
import json
import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_helpers import call

from personalize_pipeline.deletion import dataset_files, delete_users
from personalize_pipeline.locations import as_location
from personalize_pipeline.store import load_solution_version, read_index

SECRET = "Dx7-deletion-very-secret-value-3K"


@pytest.fixture
def group(demo_small, tmp_path):
    path = tmp_path / "dataset"
    shutil.copytree(demo_small, path)
    return path


def pick_users(group, n=3):
    inter = pd.read_csv(group / "interactions.csv", dtype=str)
    return list(inter["USER_ID"].value_counts().index[:n])


def write_users(tmp_path, ids):
    (tmp_path / "forget.csv").write_text("USER_ID\n" + "".join(f"{i}\n" for i in ids))
    return tmp_path / "forget.csv"


def all_text(folder):
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file())


def test_delete_users_end_to_end(group, tmp_path, capsys):
    ids = pick_users(group)
    inter = pd.read_csv(group / "interactions.csv", dtype=str)
    users = pd.read_csv(group / "users.csv", dtype=str)
    items_before = (group / "items.csv").read_bytes()
    solution = tmp_path / "sol"
    rc, out, err = call(
        capsys, "train", "--dataset", group, "--recipe", "aws-popularity-count", "--no-validate", "--out", solution
    )
    assert rc == 0, err
    old_version = json.loads(out.strip().splitlines()[-1])["solution_version"]

    rc, out, err = call(
        capsys, "delete-users", "--dataset", group, "--users", write_users(tmp_path, ids), "--solution", solution
    )
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["rows_deleted"] == {
        "interactions": int(inter["USER_ID"].isin(ids).sum()),
        "users": int(users["USER_ID"].isin(ids).sum()),
    }
    assert summary["solution_versions_holding_users"] == {str(solution): [old_version]}
    after = pd.read_csv(group / "interactions.csv", dtype=str)
    assert len(after) == len(inter) - summary["rows_deleted"]["interactions"]
    assert after.equals(inter[~inter["USER_ID"].isin(ids)].reset_index(drop=True))  # every other row exactly as it was
    assert (group / "items.csv").read_bytes() == items_before

    # the record: when, how many, hashes that match the ids, and never the ids
    record_file = as_location(summary["record"])
    text = record_file.read_text()
    record = json.loads(text)
    assert record["users_requested"] == 3 and record["deleted_at"] == summary["deleted_at"]
    salt = record["user_id_hashes"]["salt"]
    assert sorted(hashlib.sha256((salt + i).encode()).hexdigest() for i in ids) == record["user_id_hashes"]["hashes"]
    assert not any(f'"{i}"' in text or f"{i}\n" in text for i in ids)

    # a FULL after the deletion: no file of the dataset or of the new version names them
    rc, out, err = call(
        capsys, "train", "--dataset", group, "--recipe", "aws-popularity-count", "--no-validate", "--out", solution
    )
    assert rc == 0, err
    new = load_solution_version(solution)
    assert not set(ids) & set(new.user_ids)
    assert not any(f"\n{i}," in "\n" + all_text(group) for i in ids)
    job = tmp_path / "job.jsonl"
    job.write_text("".join(json.dumps({"userId": u}) + "\n" for u in [ids[0], "never-seen-user"]))
    rc, _, err = call(capsys, "batch-infer", "--solution", solution, "--input", job, "--output", tmp_path / "out")
    assert rc == 0, err
    deleted_line, unknown_line = [
        json.loads(line) for line in (tmp_path / "out" / "job.jsonl.out").read_text().splitlines()
    ]
    assert deleted_line["output"] == unknown_line["output"]  # served as an unknown user

    # the old version still holds them: listed, and removed with the flag
    rc, out, err = call(
        capsys,
        "delete-users",
        "--dataset",
        group,
        "--users",
        write_users(tmp_path, ids),
        "--solution",
        solution,
        "--remove-versions",
    )
    assert rc == 0, err
    again = json.loads(out)
    assert again["rows_deleted"] == {"interactions": 0, "users": 0} and again["solution_versions_holding_users"][
        str(solution)
    ] == [old_version]
    index = read_index(solution)
    assert [v["id"] for v in index["versions"]] == [new.version_id] and index["latest"] == index[
        "latest_full"
    ] == new.version_id
    assert not (solution / "versions" / old_version).exists()


def test_every_file_of_a_dataset_folder_and_exact_ids(tmp_path):
    root = tmp_path / "group"
    (root / "interactions" / "day=1").mkdir(parents=True)
    (root / "interactions" / "day=2").mkdir(parents=True)
    pd.DataFrame({"USER_ID": ["007", "7", "8"], "ITEM_ID": ["a", "b", "c"], "TIMESTAMP": ["1", "2", "3"]}).to_csv(
        root / "interactions" / "day=1" / "part-0.csv", index=False
    )
    table = pa.table({"USER_ID": ["007", "9"], "ITEM_ID": ["a", "b"], "TIMESTAMP": pa.array([4, 5], pa.int64())})
    pq.write_table(table, root / "interactions" / "day=2" / "part-0.parquet")
    (root / "interactions" / "day=1" / "part-1.csv.gz").write_bytes(
        gzip.compress(b"USER_ID,ITEM_ID,TIMESTAMP\n007,d,7\n70,e,8\n")
    )
    untouched = root / "interactions" / "day=2" / "part-1.csv"
    untouched.write_text("USER_ID,ITEM_ID,TIMESTAMP\n8,c,6\n")
    before = untouched.read_bytes(), untouched.stat().st_mtime_ns
    (root / "users.csv").write_text('USER_ID,NOTE\n007,"has, comma"\n7,\n')
    files = [f.url for f in dataset_files(as_location(str(root)), "interactions")]
    assert len(files) == 4 and all("/interactions/day=" in f for f in files)

    record = delete_users(str(root), pd.Series(["007"]).to_numpy(dtype=object))
    assert record["rows_deleted"] == {"interactions": 3, "users": 1}
    assert (
        gzip.decompress((root / "interactions" / "day=1" / "part-1.csv.gz").read_bytes())
        == b"USER_ID,ITEM_ID,TIMESTAMP\n70,e,8\n"
    )
    assert pd.read_csv(root / "interactions" / "day=1" / "part-0.csv", dtype=str)["USER_ID"].tolist() == ["7", "8"]
    kept = pq.read_table(root / "interactions" / "day=2" / "part-0.parquet")
    assert kept["USER_ID"].to_pylist() == ["9"] and kept.schema.field("TIMESTAMP").type == pa.int64()  # types kept
    assert (untouched.read_bytes(), untouched.stat().st_mtime_ns) == before  # no rows of theirs: not rewritten
    assert (root / "users.csv").read_text() == "USER_ID,NOTE\n7,\n"
    assert not [p for p in root.rglob(".*deleting*")]


def test_bad_input_changes_nothing(group, tmp_path, capsys):
    before = {p: p.read_bytes() for p in group.rglob("*") if p.is_file()}
    (tmp_path / "no_header.csv").write_text("ID\nu1\n")
    rc, _, err = call(capsys, "delete-users", "--dataset", group, "--users", tmp_path / "no_header.csv")
    assert rc == 2 and err.count("\n") == 1 and "no USER_ID column" in err
    rc, _, err = call(capsys, "delete-users", "--dataset", group, "--users", tmp_path / "missing.csv")
    assert rc == 2 and "users file does not exist" in err
    # a damaged file among the dataset's files: the job stops before changing any file
    (group / "users.csv").write_bytes(b"USER_ID,AGE\n" + b'"unterminated\n')
    before[group / "users.csv"] = (group / "users.csv").read_bytes()
    rc, _, err = call(capsys, "delete-users", "--dataset", group, "--users", write_users(tmp_path, pick_users(group)))
    assert rc == 2 and "users.csv" in err
    assert {p: p.read_bytes() for p in group.rglob("*") if p.is_file()} == before
    assert not (group / "deletions").exists()


def test_delete_users_on_s3(demo_small, s3_bucket, monkeypatch, tmp_path, capsys):
    server, bucket = s3_bucket
    for k, v in {
        "AWS_ENDPOINT_URL": server.endpoint_url,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    fs = server.filesystem("test", "test-secret")
    prefix = f"{bucket.removeprefix('s3://')}/dataset"
    for path in sorted(demo_small.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"{prefix}/{path.relative_to(demo_small)}")
    ids = pick_users(demo_small, 2)
    rc, out, err = call(capsys, "delete-users", "--dataset", f"{bucket}/dataset", "--users", write_users(tmp_path, ids))
    assert rc == 0, err
    summary = json.loads(out)
    remote = pd.read_csv(fs.open(f"{prefix}/interactions.csv"), dtype=str)
    local = pd.read_csv(demo_small / "interactions.csv", dtype=str)
    assert (
        not remote["USER_ID"].isin(ids).any()
        and len(remote) == len(local) - summary["rows_deleted"]["interactions"] > 0
    )
    assert summary["record"].startswith(f"{bucket}/dataset/deletions/")
    assert not [p for p in fs.find(prefix) if "deleting-" in p or ".tmp-" in p]
    # no credential in the output, the messages or any file the job wrote
    assert SECRET not in out + err
    assert not [p for p in fs.find(prefix) if SECRET.encode() in fs.cat(p)]
