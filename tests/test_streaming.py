"""Large datasets are streamed through Arrow in slices: the results must not depend on it.

The thresholds are lowered so that the small demo dataset takes the streaming paths."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import personalize_pipeline.datasets as datasets
from personalize_pipeline.datasets import load_snapshot, read_dataset_group, save_snapshot
from personalize_pipeline.features import FeaturizeOptions, featurize
from personalize_pipeline.measure import measured
from personalize_pipeline.validation import validate, validate_datasets


@pytest.fixture
def streamed(monkeypatch):
    """Every CSV file is streamed, in parse blocks of 64 kB (several slices per file)."""
    monkeypatch.setattr(datasets, "STREAM_BYTES", 1)
    monkeypatch.setattr(datasets, "CSV_BLOCK_BYTES", 1 << 16)


def _same_features(a, b):
    assert list(a.item_ids) == list(b.item_ids) and list(a.user_ids) == list(b.user_ids)
    assert list(a.interactions.columns) == list(b.interactions.columns)
    for c in a.interactions.columns:
        assert pa.array(a.interactions[c]).to_pylist() == pa.array(b.interactions[c]).to_pylist(), c
    pd.testing.assert_frame_equal(a.items, b.items)
    pd.testing.assert_frame_equal(a.users, b.users)
    assert {k: v for k, v in a.info.items() if k != "seconds"} == {k: v for k, v in b.info.items() if k != "seconds"}


def test_streamed_read_is_the_file_as_read_in_memory(demo_small, streamed):
    group = read_dataset_group(demo_small)
    assert group.interactions.streamed and group.items.streamed
    assert len(list(group.interactions.slices(1000))) > 1
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets, "STREAM_BYTES", 1 << 40)
        whole = read_dataset_group(demo_small)
    assert not whole.interactions.streamed
    for a, b in zip(group.datasets(), whole.datasets(), strict=True):
        assert (a.num_rows, a.fingerprint, a.schema, a.column_names) == (
            b.num_rows,
            b.fingerprint,
            b.schema,
            b.column_names,
        )
    assert group.interactions.table.equals(whole.interactions.table)  # materialized on demand


@pytest.mark.parametrize(
    "options", [FeaturizeOptions(), FeaturizeOptions(event_type="click", max_user_history_length_percentile=0.9)]
)
def test_featurization_by_slices_equals_one_slice(demo_small, streamed, options):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets, "STREAM_BYTES", 1 << 40)
        whole = read_dataset_group(demo_small)
    reference = featurize(whole, options, slice_rows=10**9)  # one slice: every dictionary global
    _same_features(reference, featurize(whole, options, slice_rows=777))
    _same_features(reference, featurize(read_dataset_group(demo_small), options))
    # an independent check of the codes: sorted unique ids, stable sort by (user, time)
    raw = whole.interactions.frame()
    if options.event_type:
        raw = raw[raw["EVENT_TYPE"] == options.event_type]
    users = np.searchsorted(reference.user_ids.astype(str), raw["USER_ID"].to_numpy(dtype=str))
    assert reference.n_interactions <= len(raw) and set(np.unique(reference.interactions["user"])) <= set(users)


def test_validation_by_slices_sums_rule_outcomes(demo_small, streamed, tmp_path):
    import shutil

    group_dir = tmp_path / "group"
    shutil.copytree(demo_small, group_dir)
    df = pd.read_csv(group_dir / "interactions.csv", dtype=str, keep_default_na=False)
    df.loc[[4, 4000], "TIMESTAMP"] = ["yesterday", "soon"]
    df.to_csv(group_dir / "interactions.csv", index=False)
    streamed_group = read_dataset_group(group_dir)
    streamed_report = validate_datasets(streamed_group.datasets(), streamed_group.location, slice_rows=1000)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets, "STREAM_BYTES", 1 << 40)
        whole = read_dataset_group(group_dir)
    sliced = validate_datasets(whole.datasets(), whole.location, slice_rows=1000)
    one = validate(whole)
    for report in (streamed_report, sliced):
        assert [r.message() for r in report.results] == [r.message() for r in one.results]
    [failure] = [r for r in sliced.failures if r.column == "TIMESTAMP" and "integers" in r.description]
    assert failure.unexpected_count == 2 and failure.element_count == len(df)
    assert failure.examples == ["yesterday", "soon"] and failure.lines == [6, 4002]


def test_streamed_snapshot_round_trip(demo_small, streamed, tmp_path, monkeypatch):
    dataset = read_dataset_group(demo_small).interactions
    save_snapshot(dataset, tmp_path / "snap")
    monkeypatch.setattr(datasets, "STREAM_ROWS", 10)
    loaded = load_snapshot(tmp_path / "snap")
    assert loaded.streamed and loaded.num_rows == dataset.num_rows
    assert pa.concat_tables(loaded.slices(1000)).equals(dataset.table)


def test_measured_reports_seconds_and_peak_memory():
    with measured() as m:
        block = np.ones(20_000_000, dtype=np.uint8)  # 20 MB touched
        block.sum()
    assert m.seconds > 0 and m.peak_rss_mb > 20
    assert set(m.as_dict()) == {"seconds", "peak_rss_mb"}


def test_a_large_csv_is_parsed_once_and_its_spill_removed_with_the_dataset(demo_small, streamed, tmp_path):
    import gc
    import shutil

    group_dir = tmp_path / "group"
    shutil.copytree(demo_small, group_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.tempfile, "tempdir", str(tmp_path / "spill"))
        (tmp_path / "spill").mkdir()
        group = read_dataset_group(group_dir)
        spills = set((tmp_path / "spill").iterdir())
    assert len(spills) == len(group.datasets())  # one parsed copy per streamed file
    (group_dir / "interactions.csv").write_text("not,the,same\n")  # later passes read the parsed rows
    assert sum(p.num_rows for p in group.interactions.slices(1000)) == group.interactions.num_rows
    del group
    gc.collect()
    assert not any(p.exists() for p in spills)
