import numpy as np
import pandas as pd
import pytest

from personalize_pipeline.attribution import attribute_metrics, totals_by_source
from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.errors import InputError
from personalize_pipeline.features import featurize

DAY = 86_400
T0 = 1_700_006_400  # 2023-11-15 00:00 UTC


@pytest.fixture
def events():
    rng = np.random.default_rng(0)
    n = 3000
    return pd.DataFrame(
        {
            "USER_ID": [f"u{i}" for i in rng.integers(0, 50, n)],
            "ITEM_ID": [f"i{i}" for i in rng.integers(0, 40, n)],
            "TIMESTAMP": T0 + rng.integers(0, 3 * DAY, n),
            "EVENT_TYPE": rng.choice(["click", "purchase"], n),
            "EVENT_VALUE": np.where(rng.random(n) < 0.1, np.nan, rng.integers(1, 100, n).astype(float)),
            "EVENT_ATTRIBUTION_SOURCE": rng.choice(["foryou", "email", ""], n),
        }
    )


def expected(df):
    df = df.assign(source=df["EVENT_ATTRIBUTION_SOURCE"].replace("", "UNATTRIBUTED").fillna("UNATTRIBUTED"))
    df["day"] = pd.to_datetime(df["TIMESTAMP"] // DAY * DAY, unit="s").dt.strftime("%Y-%m-%d")
    g = df.groupby(["source", "day", "EVENT_TYPE"]).agg(
        events=("USER_ID", "size"), event_value_sum=("EVENT_VALUE", lambda v: v.fillna(0).sum())
    )
    return g.reset_index().rename(columns={"EVENT_TYPE": "event_type"})


@pytest.mark.parametrize("slice_rows", [None, 700])
def test_events_and_value_per_source_day_and_type(events, tmp_path, slice_rows):
    events.to_csv(tmp_path / "interactions.csv", index=False)
    group = read_dataset_group(tmp_path)
    report = attribute_metrics(group.interactions, slice_rows=slice_rows)
    want = expected(events)
    assert list(report.columns) == ["source", "day", "event_type", "events", "event_value_sum"]
    assert set(report["source"]) == {"foryou", "email", "UNATTRIBUTED"} and set(report["day"]) == {
        "2023-11-15",
        "2023-11-16",
        "2023-11-17",
    }
    pd.testing.assert_frame_equal(report, want, check_dtype=False)
    assert report["events"].sum() == len(events)
    totals = totals_by_source(report)
    mask = (events["EVENT_ATTRIBUTION_SOURCE"] == "email") & (events["EVENT_TYPE"] == "purchase")
    row = totals[(totals["source"] == "email") & (totals["event_type"] == "purchase")].iloc[0]
    assert row["events"] == mask.sum() and row["event_value_sum"] == pytest.approx(
        events.loc[mask, "EVENT_VALUE"].fillna(0).sum()
    )


def test_attribution_source_is_not_a_model_feature(events, tmp_path):
    events.to_csv(tmp_path / "interactions.csv", index=False)
    features = featurize(read_dataset_group(tmp_path))
    assert "ctx_EVENT_ATTRIBUTION_SOURCE" not in features.interactions.columns


def test_without_a_source_column(events, tmp_path):
    events.drop(columns=["EVENT_ATTRIBUTION_SOURCE"]).to_csv(tmp_path / "interactions.csv", index=False)
    with pytest.raises(InputError, match="no EVENT_ATTRIBUTION_SOURCE column"):
        attribute_metrics(read_dataset_group(tmp_path).interactions)
