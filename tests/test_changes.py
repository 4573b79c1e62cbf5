"""The new-data check before an UPDATE (personalize_pipeline/changes.py): only new files
trigger it; a changed imported file needs FULL."""

import os
import shutil

import pandas as pd

from personalize_pipeline.changes import changed_files, dataset_files, update_check
from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.features import featurize
from personalize_pipeline.training import SolutionConfig, train


def test_update_check_sees_only_new_data(tmp_path, demo_small):
    dataset = tmp_path / "dataset"
    shutil.copytree(demo_small, dataset)
    solution = tmp_path / "sol"
    check = update_check(dataset, solution)
    assert not check.needed and "no FULL solution version" in check.reason

    before = dataset_files(dataset)
    assert set(before) == {"interactions.csv", "items.csv", "users.csv"}
    train(featurize(read_dataset_group(dataset)), SolutionConfig(), solution)
    check = update_check(dataset, solution)
    assert not check.needed and "no new data since solution version" in check.reason

    # touched but unchanged: the signature differs, the content does not
    items = dataset / "items.csv"
    stat = items.stat()
    items.write_bytes(items.read_bytes())
    os.utime(items, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a later mtime, whatever the clock
    assert changed_files(dataset_files(dataset), before) == ["items.csv"]
    assert not update_check(dataset, solution).needed

    df = pd.read_csv(dataset / "interactions.csv", dtype=str, keep_default_na=False)
    df.iloc[:50].assign(TIMESTAMP=str(int(df["TIMESTAMP"].astype(int).max()) + 60)).pipe(
        lambda new: pd.concat([df, new]).to_csv(dataset / "interactions.csv", index=False)
    )
    check = update_check(dataset, solution)  # an imported file changed: only FULL can take that
    assert not check.needed and check.full_needed
    assert "interactions.csv" in check.reason and "run FULL" in check.reason
