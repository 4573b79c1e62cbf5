import json

import numpy as np
import pandas as pd
import pytest
from cli_helpers import call

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.errors import InputError
from personalize_pipeline.features import featurize
from personalize_pipeline.recipes import PopularityCount, TrendingNow, UserBatch, get_recipe

DAY = 86_400
END = 1_700_000_000
BURST = ["i050", "i060", "i070"]  # mid-popularity items that suddenly take off


def steady_events(rng, n_items=200, n_users=400, days=30, events=20_000):
    """Zipf-like item popularity, constant over ``days`` days before END."""
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.9
    items = rng.choice(n_items, size=events, p=weights / weights.sum())
    return pd.DataFrame(
        {
            "USER_ID": [f"u{u:03d}" for u in rng.integers(0, n_users, events)],
            "ITEM_ID": [f"i{i:03d}" for i in items],
            "TIMESTAMP": END - rng.integers(0, days * DAY, events),
            "GENRE": np.where(items % 2 == 0, "even", "odd"),
        }
    )


def burst_events(rng, per_item=45, hours=20):
    """Each BURST item gets ``per_item`` extra events in the last ``hours`` hours."""
    n = per_item * len(BURST)
    return pd.DataFrame(
        {
            "USER_ID": [f"b{u:03d}" for u in rng.integers(0, 300, n)],
            "ITEM_ID": np.repeat(BURST, per_item),
            "TIMESTAMP": END - rng.integers(0, hours * 3600, n),
            "GENRE": "even",
        }
    )


def write(tmp_path, frames):
    df = pd.concat(frames, ignore_index=True)
    df[["USER_ID", "ITEM_ID", "TIMESTAMP"]].to_csv(tmp_path / "interactions.csv", index=False)
    items = df[["ITEM_ID", "GENRE"]].drop_duplicates("ITEM_ID")
    items.to_csv(tmp_path / "items.csv", index=False)
    return tmp_path


@pytest.fixture
def burst_dataset(tmp_path):
    rng = np.random.default_rng(7)
    return write(tmp_path, [steady_events(rng), burst_events(rng)])


def top10(model, features):
    items, _ = model.recommend(
        UserBatch.from_histories(np.array([-1]), np.zeros(2, np.int64), np.zeros(0, np.int32)), 10
    )
    return [features.item_ids[i] for i in items[0]]


def test_burst_on_mid_popularity_items_tops_trending_but_not_popularity(burst_dataset):
    features = featurize(read_dataset_group(burst_dataset))
    counts = features.interactions["item"].value_counts()
    ranks = {features.item_ids[c]: r for r, c in enumerate(counts.index)}
    assert all(10 < ranks[i] for i in BURST)  # mid-popularity even with the burst
    trending = top10(TrendingNow().fit(features), features)
    popular = top10(PopularityCount().fit(features), features)
    assert set(trending[:3]) == set(BURST)
    assert not set(BURST) & set(popular)


def test_trend_score_follows_the_window(burst_dataset):
    features = featurize(read_dataset_group(burst_dataset))
    # the burst started 20 hours ago: against the day before it is a rise; over the last
    # 3 hours against the 3 hours before, its rate is flat, so it no longer trends
    expected = {"1 day": True, "3 hours": False}
    for frequency, on_top in expected.items():
        model = TrendingNow(trend_discovery_frequency=frequency).fit(features)
        assert (set(top10(model, features)[:3]) == set(BURST)) is on_top, frequency
        stats = model.training_stats()
        assert (
            stats["window_seconds"] == {"1 day": DAY, "3 hours": 3 * 3600}[frequency]
            and END - 600 < stats["window_end"] <= END
        )
    model = TrendingNow(trend_discovery_frequency="1 day").fit(features)
    items, scores = model.trending(200)
    assert np.all(np.diff(scores[scores > 0]) <= 0) and abs(float(scores.sum()) - 1.0) < 1e-5
    with pytest.raises(InputError, match="trend_discovery_frequency.*not one of"):
        TrendingNow(trend_discovery_frequency="2 days")


def test_steady_data_has_no_burst_items_on_top(tmp_path):
    rng = np.random.default_rng(7)
    features = featurize(read_dataset_group(write(tmp_path, [steady_events(rng)])))
    trending = top10(TrendingNow().fit(features), features)
    assert not set(BURST) & set(trending[:3])


def test_trending_batch_job_with_filter(burst_dataset, tmp_path, capsys):
    assert get_recipe("arn:aws:personalize:::recipe/aws-trending-now") is TrendingNow
    solution = tmp_path / "sol"
    rc, out, err = call(
        capsys,
        "train",
        "--dataset",
        burst_dataset,
        "--recipe",
        "aws-trending-now",
        "--hp",
        "trend_discovery_frequency=1 day",
        "--out",
        solution,
    )
    assert rc == 0, err
    job = tmp_path / "job.jsonl"
    job.write_text('{"userId": "u001"}\n{"userId": "nobody"}\n')
    rc, out, err = call(
        capsys,
        "batch-infer",
        "--solution",
        solution,
        "--input",
        job,
        "--output",
        tmp_path / "out",
        "--num-results",
        "5",
        "--filter",
        'EXCLUDE ItemID WHERE Items.GENRE IN ("odd")',
    )
    assert rc == 0, err
    lines = [json.loads(line) for line in (tmp_path / "out" / "job.jsonl.out").read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["output"] == lines[1]["output"]  # the same list for everyone
    items = lines[0]["output"]["recommendedItems"]
    assert set(items[:3]) == set(BURST) and len(items) == 5 and all(int(i[1:]) % 2 == 0 for i in items)
    rc, out, err = call(
        capsys,
        "batch-infer",
        "--solution",
        solution,
        "--input",
        job,
        "--output",
        tmp_path / "out2",
        "--num-results",
        "5",
        "--filter",
        'INCLUDE ItemID WHERE Items.GENRE IN ("odd")',
    )
    assert rc == 0, err
    items = json.loads((tmp_path / "out2" / "job.jsonl.out").read_text().splitlines()[0])["output"]["recommendedItems"]
    assert len(items) == 5 and all(int(i[1:]) % 2 == 1 for i in items)
