"""Dataset folders and INCREMENTAL imports: a FULL on the files so far, then an UPDATE that
reads only the file that landed since (locally and on the real local S3 server); a
re-delivered file is skipped, a changed file asks for FULL, a bad new file fails naming
file and line and leaves the latest version as it was."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from cli_helpers import call

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.features import featurize
from personalize_pipeline.increments import update_features
from personalize_pipeline.store import load_solution_version, read_index
from personalize_pipeline.training import SolutionConfig, train
from personalize_pipeline.validation import validate

RECIPE = "aws-popularity-count"


def _time_ordered(demo) -> pd.DataFrame:
    df = pd.read_csv(demo / "interactions.csv", dtype=str, keep_default_na=False)
    return df.iloc[np.argsort(df["TIMESTAMP"].astype(np.int64).to_numpy(), kind="stable")].reset_index(drop=True)


@pytest.fixture
def lake(demo_small, tmp_path):
    """The demo dataset as a folder of three time-ordered interaction files in
    ``date=`` partitions, and a fourth file (new items, new users) not landed yet."""
    root = tmp_path / "lake"
    df = _time_ordered(demo_small)
    n = len(df)
    parts = [df.iloc[i * n // 4 : (i + 1) * n // 4].copy() for i in range(4)]
    parts[3].loc[parts[3].index[:300], "ITEM_ID"] = [f"new-item-{i % 5}" for i in range(300)]
    parts[3].loc[parts[3].index[300:340], "USER_ID"] = "new-user"
    for i, part in enumerate(parts[:3]):
        folder = root / "interactions" / f"date=2026-12-0{i + 1}"
        folder.mkdir(parents=True)
        part.to_csv(folder / "part-0.csv", index=False)
    shutil.copy(demo_small / "items.csv", root / "items.csv")
    shutil.copy(demo_small / "users.csv", root / "users.csv")
    (root / "interactions" / "_SUCCESS").write_text("")  # markers are not data
    pending = tmp_path / "pending.csv"
    parts[3].to_csv(pending, index=False)
    return root, pending


def _land(root, pending, name="date=2026-12-04"):
    folder = root / "interactions" / name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(pending, folder / "part-0.csv")
    return folder / "part-0.csv"


def test_folder_dataset_is_read_and_validated_file_by_file(lake):
    root, _ = lake
    group = read_dataset_group(root)
    assert [d.path for d in group.interactions.files()] == [
        f"interactions/date=2026-12-0{i}/part-0.csv" for i in (1, 2, 3)
    ]
    report = validate(group)
    assert report.success, report.summary()
    sources = {r.source for r in report.results}
    assert any(s.endswith("date=2026-12-02/part-0.csv") for s in sources)  # rules per file
    assert any(s.endswith("/interactions") for s in sources)  # the minimums for the whole dataset


def test_update_imports_only_the_new_file(lake, tmp_path, capsys):
    root, pending = lake
    solution = tmp_path / "sol"
    rc, out, err = call(capsys, "train", "--dataset", root, "--recipe", RECIPE, "--out", solution)
    assert rc == 0, err
    full = json.loads(out.strip().splitlines()[-1])
    _land(root, pending)
    rc, out, err = call(
        capsys,
        "train",
        "--dataset",
        root,
        "--recipe",
        RECIPE,
        "--training-mode",
        "UPDATE",
        "--base",
        solution,
        "--out",
        solution,
    )
    assert rc == 0, err
    update = json.loads(out.strip().splitlines()[-1])
    assert update["training_mode"] == "UPDATE" and update["new_files"] == ["interactions/date=2026-12-04/part-0.csv"]
    version = load_solution_version(solution)
    assert version.manifest["base_version"] == full["solution_version"]
    imported = [e["path"] for e in version.manifest["dataset"]["imports"]["interactions"]]
    assert imported[-1].endswith("date=2026-12-04/part-0.csv") and len(imported) == 4
    # the new items and the new user joined the catalogue; known codes did not move
    before = load_solution_version(solution / "versions" / full["solution_version"])
    assert list(version.item_ids[: len(before.item_ids)]) == list(before.item_ids)
    assert {f"new-item-{i}" for i in range(5)} <= set(version.item_ids) and "new-user" in set(version.user_ids)
    total = sum(len(pd.read_csv(p)) for p in (root / "interactions").rglob("*.csv"))
    assert len(version.history_items) == total
    # popularity of the new items shows in the list the UPDATE serves
    job = tmp_path / "job.jsonl"
    job.write_text('{"userId": "new-user"}\n')
    rc, out, err = call(capsys, "batch-infer", "--solution", solution, "--input", job, "--output", tmp_path / "out")
    assert rc == 0, err
    items = json.loads((tmp_path / "out" / "job.jsonl.out").read_text())["output"]["recommendedItems"]
    assert any(i.startswith("new-item-") for i in items[:10])

    # the same bytes delivered again under another name: skipped, not counted twice
    _land(root, pending, "date=2026-12-04-redelivered")
    rc, out, err = call(
        capsys,
        "train",
        "--dataset",
        root,
        "--recipe",
        RECIPE,
        "--training-mode",
        "UPDATE",
        "--base",
        solution,
        "--out",
        solution,
    )
    assert rc == 0, err
    assert "same bytes as interactions/date=2026-12-04/part-0.csv" in err and "skipped" in err
    assert json.loads(out.strip().splitlines()[-1])["new_files"] == []
    assert len(load_solution_version(solution).history_items) == total

    # a file the versions imported changes: only a FULL can take that
    first = root / "interactions" / "date=2026-12-01" / "part-0.csv"
    first.write_text(first.read_text() + first.read_text().splitlines()[1] + "\n")
    latest = read_index(solution)["latest"]
    rc, out, err = call(
        capsys,
        "train",
        "--dataset",
        root,
        "--recipe",
        RECIPE,
        "--training-mode",
        "UPDATE",
        "--base",
        solution,
        "--out",
        solution,
    )
    assert rc == 2 and "date=2026-12-01/part-0.csv changed" in err and "run FULL" in err
    assert len(err.strip().splitlines()) == 1 and read_index(solution)["latest"] == latest


def test_a_bad_new_file_fails_and_the_latest_version_stays(lake, tmp_path, capsys):
    root, pending = lake
    solution = tmp_path / "sol"
    train(featurize(read_dataset_group(root)), SolutionConfig(RECIPE), solution)
    latest = read_index(solution)["latest"]
    bad = pd.read_csv(pending, dtype=str, keep_default_na=False)
    bad.loc[6, "TIMESTAMP"] = "yesterday"
    bad_file = root / "interactions" / "date=2026-12-04" / "part-0.csv"
    bad_file.parent.mkdir(parents=True)
    bad.to_csv(bad_file, index=False)
    rc, out, err = call(
        capsys,
        "train",
        "--dataset",
        root,
        "--recipe",
        RECIPE,
        "--training-mode",
        "UPDATE",
        "--base",
        solution,
        "--out",
        solution,
    )
    assert rc == 2 and out == ""
    assert "date=2026-12-04/part-0.csv" in err and "line 8" in err and "TIMESTAMP" in err
    assert read_index(solution)["latest"] == latest  # nothing written
    bad_file.unlink()  # removing the bad file lets the next run proceed
    _land(root, pending, "date=2026-12-05")
    rc, out, err = call(
        capsys,
        "train",
        "--dataset",
        root,
        "--recipe",
        RECIPE,
        "--training-mode",
        "UPDATE",
        "--base",
        solution,
        "--out",
        solution,
    )
    assert rc == 0, err


def test_a_new_file_with_other_columns_is_refused(lake, tmp_path):
    root, pending = lake
    solution = tmp_path / "sol"
    train(featurize(read_dataset_group(root)), SolutionConfig(RECIPE), solution)
    other = pd.read_csv(pending, dtype=str, keep_default_na=False).drop(columns=["DEVICE"])
    path = root / "interactions" / "late.csv"
    other.to_csv(path, index=False)
    from personalize_pipeline.errors import InputError

    with pytest.raises(InputError, match="late.csv: columns .* differ from the interactions already imported"):
        update_features(root, solution, SolutionConfig(RECIPE).featurize_options())


def test_incremental_update_on_s3(lake, tmp_path, s3_bucket, monkeypatch):
    server, bucket = s3_bucket
    root, pending = lake
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    fs = server.filesystem("test", "test-secret")
    prefix = f"{bucket.removeprefix('s3://')}/lake"
    fs.put(str(root) + "/", prefix, recursive=True)
    dataset, solution = f"{bucket}/lake", f"{bucket}/solutions/pop"
    config = SolutionConfig(RECIPE)
    train(featurize(read_dataset_group(dataset)), config, solution)
    fs.put_file(str(pending), f"{prefix}/interactions/date=2026-12-04/part-0.csv")
    fs.put_file(str(pending), f"{prefix}/interactions/date=2026-12-04/part-1.csv")
    features, increment = update_features(dataset, solution, config.featurize_options())
    assert increment.plan.new_files == ["interactions/date=2026-12-04/part-0.csv"]
    assert increment.plan.redelivered == [
        ("interactions/date=2026-12-04/part-1.csv", "interactions/date=2026-12-04/part-0.csv")
    ]
    version = train(features, config, solution, "UPDATE")
    assert features.info["counts"]["new_interactions"] == len(pd.read_csv(pending))
    assert "new-user" in set(version.user_ids)


def test_the_heaviest_users_get_personal_lists(demo_small, tmp_path, one_torch_thread):
    features = featurize(read_dataset_group(demo_small))
    version = train(features, SolutionConfig("aws-hrnn", {"epochs": 2, "hidden_dimension": 32}), tmp_path / "sol")
    lengths = np.diff(version.history_indptr)
    heaviest = np.argsort(-lengths)[:3]  # above the 0.99 history-length percentile: not trained on
    assert lengths[heaviest].min() > np.quantile(lengths[lengths > 0], 0.99)
    assert version.recipe.users_dropped_by_history_percentiles >= 3
    items, _ = version.recipe.recommend(version.user_batch(heaviest), 10)
    popular = np.argsort(-np.bincount(features.interactions["item"], minlength=features.n_items), kind="stable")[:10]
    for row in items:
        assert len(set(row.tolist()) & set(popular.tolist())) < 8  # a personal list, not the popularity one


def test_filters_see_events_that_training_did_not_use(demo_small, tmp_path, capsys):
    solution = tmp_path / "sol"
    rc, _, err = call(
        capsys, "train", "--dataset", demo_small, "--recipe", RECIPE, "--event-type", "watch", "--out", solution
    )
    assert rc == 0, err
    events = pd.read_csv(demo_small / "interactions.csv", dtype=str, keep_default_na=False)
    clicks = events[events["EVENT_TYPE"] == "click"].groupby("USER_ID")["ITEM_ID"].agg(set)
    users = clicks.index[:20]
    job = tmp_path / "job.jsonl"
    job.write_text("".join(json.dumps({"userId": u}) + "\n" for u in users))
    expression = 'EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("click")'
    rc, _, err = call(
        capsys,
        "batch-infer",
        "--solution",
        solution,
        "--input",
        job,
        "--output",
        tmp_path / "out",
        "--filter",
        expression,
    )
    assert rc == 0, err
    lines = [json.loads(x) for x in (tmp_path / "out" / "job.jsonl.out").read_text().splitlines()]
    for line in lines:
        recommended = set(line["output"]["recommendedItems"])
        assert recommended and not recommended & clicks[line["input"]["userId"]]


@pytest.mark.slow
def test_new_items_files_upsert_by_id(lake, tmp_path):
    root, _ = lake
    (root / "items").mkdir()
    shutil.move(root / "items.csv", root / "items" / "2026-12-01.csv")
    solution = tmp_path / "sol"
    config = SolutionConfig("aws-hrnn-metadata", {"epochs": 1})
    train(featurize(read_dataset_group(root)), config, solution)
    items = pd.read_csv(root / "items" / "2026-12-01.csv", dtype=str, keep_default_na=False)
    changed = items.iloc[[0]].assign(GENRE="Brand-new-genre")
    added = items.iloc[[1]].assign(ITEM_ID="late-item", GENRE="Comedy")
    pd.concat([changed, added]).to_csv(root / "items" / "2026-12-02.csv", index=False)
    features, increment = update_features(root, solution, config.featurize_options())
    assert increment.plan.new_files == ["items/2026-12-02.csv"] and features.info["counts"]["new_interactions"] == 0
    version = train(features, config, solution, "UPDATE")
    catalog = version.items_metadata.set_index("ITEM_ID")
    assert catalog.loc[items.iloc[0]["ITEM_ID"], "GENRE"] == "Brand-new-genre"  # the later row wins
    assert catalog.loc[items.iloc[2]["ITEM_ID"], "GENRE"] == items.iloc[2]["GENRE"]  # others untouched
    assert catalog.loc["late-item", "GENRE"] == "Comedy"
    assert "Brand-new-genre" in features.info["vocabularies"]["items.GENRE"]
    scores = version.recipe.score(version.user_batch(np.arange(5)))
    assert np.isfinite(scores[:, version.item_codes(np.array(["late-item"], dtype=object))[0]]).all()
