"""featurize against a straightforward pandas reference on awkward data: missing values,
blank values, duplicate ids (also in the Items file), ids that look like numbers, unsorted
timestamps with ties, impressions with unknown and blank entries, event filters, and
slices of a few rows (every dictionary merge path)."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.features import FeaturizeOptions, featurize


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    rng = np.random.default_rng(17)
    n = 2000
    users = np.array(["u1", "u2", "007", "7", "u10", "x y", "u3"])
    items = np.array([f"i{k}" for k in range(40)] + ["007", "i 1"])
    impressions = [
        "|".join(rng.choice(np.append(items, ["new1", "new2"]), rng.integers(1, 5)))
        if rng.random() > 0.2
        else rng.choice(["", " "])
        for _ in range(n)
    ]
    frame = pd.DataFrame(
        {
            "USER_ID": rng.choice(users, n),
            "ITEM_ID": rng.choice(items, n),
            "TIMESTAMP": [str(t) if rng.random() > 0.1 else f" {t} " for t in rng.integers(100, 130, n)],
            "EVENT_TYPE": rng.choice(["click", "watch", "", "buy"], n),
            "EVENT_VALUE": rng.choice(["0.5", "1", "", "2.5"], n),
            "IMPRESSION": impressions,
            "DEVICE": rng.choice(["mobile", "tv", "", "  "], n),
        }
    )
    path = tmp_path_factory.mktemp("awkward")
    frame.to_csv(path / "interactions.csv", index=False)
    catalogue = pd.DataFrame({"ITEM_ID": [f"i{k % 45}" for k in range(60)], "PRICE": rng.random(60).round(2)})
    catalogue.to_csv(path / "items.csv", index=False)
    return path


def _raw(path) -> pd.DataFrame:
    raw = pd.read_csv(path / "interactions.csv", dtype=object, keep_default_na=False)
    for name in raw.columns:  # blank values are missing
        raw[name] = pd.Series([v if v.strip() else None for v in raw[name]], dtype=object)
    return raw


def _reference(path, options: FeaturizeOptions) -> dict:
    raw = _raw(path)
    catalogue = pd.read_csv(path / "items.csv", dtype=str)["ITEM_ID"]
    tokens = [t for v in raw["IMPRESSION"].dropna() for t in v.split("|")]
    item_ids = np.array(sorted(set(raw["ITEM_ID"]) | set(tokens) | set(catalogue)), dtype=object)
    user_ids = np.array(sorted(set(raw["USER_ID"])), dtype=object)
    raw["user"] = np.searchsorted(user_ids, raw["USER_ID"].to_numpy()).astype(np.int32)
    raw["item"] = np.searchsorted(item_ids, raw["ITEM_ID"].to_numpy()).astype(np.int32)
    raw["timestamp"] = raw["TIMESTAMP"].str.strip().astype(np.int64)
    keep = pd.Series(True, index=raw.index)
    if options.event_type is not None:
        keep &= raw["EVENT_TYPE"] == options.event_type
    if options.event_value_threshold is not None:
        keep &= raw["EVENT_VALUE"].astype(float) >= options.event_value_threshold
    everything = raw.iloc[np.lexsort((raw["timestamp"], raw["user"]))]
    kept = raw[keep.to_numpy()]
    kept = kept.iloc[np.lexsort((kept["timestamp"], kept["user"]))]
    vocabulary = sorted(set(raw.loc[keep, "DEVICE"].dropna()))
    code = {v: k for k, v in enumerate(item_ids)}
    return {
        "item_ids": item_ids,
        "user_ids": user_ids,
        "user": kept["user"].to_numpy(),
        "item": kept["item"].to_numpy(),
        "timestamp": kept["timestamp"].to_numpy(),
        # categories in order of first appearance in the file, of the kept rows
        "event_type": pd.Categorical(
            kept["EVENT_TYPE"].to_numpy(dtype=object),
            categories=pd.unique(raw.loc[keep.to_numpy(), "EVENT_TYPE"].dropna()),
        ),
        "event_value": kept["EVENT_VALUE"].astype(float).to_numpy(np.float32),
        "impression": [None if v is None else [code[t] for t in v.split("|")] for v in kept["IMPRESSION"]],
        "ctx_DEVICE": np.array([0 if v is None else vocabulary.index(v) + 1 for v in kept["DEVICE"]]),
        "events": None
        if options == FeaturizeOptions()
        else (
            everything["user"].to_numpy(),
            everything["item"].to_numpy(),
            everything["EVENT_TYPE"].to_numpy(dtype=object),
        ),
    }


@pytest.mark.parametrize(
    "options",
    [
        FeaturizeOptions(),
        FeaturizeOptions(event_type="watch"),
        FeaturizeOptions(event_value_threshold=1.0),
        FeaturizeOptions(event_type="click", event_value_threshold=0.6),
    ],
    ids=["all", "type", "value", "both"],
)
@pytest.mark.parametrize("slice_rows", [None, 37])
def test_featurize_equals_the_reference(awkward, options, slice_rows):
    expected = _reference(awkward, options)
    got = featurize(read_dataset_group(awkward), options, slice_rows=slice_rows)
    assert list(got.item_ids) == list(expected["item_ids"]) and list(got.user_ids) == list(expected["user_ids"])
    frame = got.interactions
    for name in ("user", "item", "timestamp", "event_value", "ctx_DEVICE"):
        np.testing.assert_array_equal(frame[name].to_numpy(), expected[name], err_msg=name)
    assert frame["user"].dtype == np.int32 and frame["item"].dtype == np.int32
    assert frame["event_value"].dtype == np.float32 and frame["timestamp"].dtype == np.int64
    assert list(frame["event_type"].cat.categories) == list(expected["event_type"].categories)
    np.testing.assert_array_equal(frame["event_type"].cat.codes, expected["event_type"].codes)
    impressions = pa.array(frame["impression"]).to_pylist()
    assert impressions == expected["impression"]
    if expected["events"] is None:
        assert got.events is None
    else:
        users, items, types = expected["events"]
        np.testing.assert_array_equal(got.events["user"], users)
        np.testing.assert_array_equal(got.events["item"], items)
        assert [None if pd.isna(v) else v for v in got.events["event_type"]] == [
            None if v is None else v for v in types
        ]
