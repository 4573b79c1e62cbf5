"""Metrics against an independent, deliberately naive per-user computation."""

import json
import math
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.features import featurize
from personalize_pipeline.metrics import (
    EvalSplit,
    evaluate,
    leave_last_out_split,
    personalize_split,
    ranking_metrics,
)
from personalize_pipeline.recipes import PopularityCount

MOVIELENS = "tests/data/movielens-slice"


def naive_leave_last_out_popularity(df: pd.DataFrame, exclude_seen: bool, ks=(5, 10, 25)) -> dict:
    """Plain Python: per-user lists, RecBole split, unique-user popularity, tie-break by
    event count then ITEM_ID string order, metrics per user."""
    df = df.reset_index(drop=True)
    df["pos"] = np.arange(len(df))
    per_user = defaultdict(list)
    for row in df.sort_values(["TIMESTAMP", "pos"], kind="stable").itertuples():
        per_user[row.USER_ID].append(row.ITEM_ID)
    train_pairs, train_events, tests = set(), defaultdict(int), []
    for user, items in per_user.items():
        n = len(items)
        held = min(2, n - 1)
        for it in items[: n - held]:
            train_pairs.add((user, it))
            train_events[it] += 1
        if held >= 1:
            tests.append((items[:-1], items[-1]))
    users_per_item = defaultdict(int)
    for _, it in train_pairs:
        users_per_item[it] += 1
    catalog = sorted(set(df["ITEM_ID"]))
    ranking = sorted(catalog, key=lambda it: (-users_per_item.get(it, 0), -train_events.get(it, 0), it))
    out = {
        f"{m}_at_{k}": 0.0
        for k in ks
        for m in ("hit_rate", "normalized_discounted_cumulative_gain", "mean_reciprocal_rank")
    }
    recommended_all = set()
    for history, truth in tests:
        seen = set(history) if exclude_seen else set()
        recs = [it for it in ranking if it not in seen][:25]
        recommended_all.update(recs)
        rank = recs.index(truth) + 1 if truth in recs else None
        for k in ks:
            if rank is not None and rank <= k:
                out[f"hit_rate_at_{k}"] += 1
                out[f"normalized_discounted_cumulative_gain_at_{k}"] += 1 / math.log2(rank + 1)
                out[f"mean_reciprocal_rank_at_{k}"] += 1 / rank
    out = {k: v / len(tests) for k, v in out.items()}
    out["coverage"] = len(recommended_all) / len(catalog)
    return out


@pytest.fixture(scope="module")
def movielens():
    group = read_dataset_group(MOVIELENS)
    return group, featurize(group)


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_leave_last_out_matches_independent_computation(movielens, exclude_seen):
    group, features = movielens
    # restrict the naive version's catalogue to interactions (movielens items.csv adds more)
    expected = naive_leave_last_out_popularity(group.interactions.typed(), exclude_seen)
    result = evaluate(
        features, PopularityCount, protocol="leave-last-out", exclude_seen=exclude_seen, with_baseline=False
    )
    got = result.metrics
    n_catalog_naive = group.interactions.frame()["ITEM_ID"].nunique()
    expected["coverage"] *= n_catalog_naive / features.n_items  # coverage is over the whole catalogue
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


def test_leave_last_out_on_demo_data_matches(tmp_path):
    from personalize_pipeline.demo_data import DemoSpec, generate

    generate(tmp_path, DemoSpec(users=200, items=150, interactions=4000, seed=7))
    group = read_dataset_group(tmp_path)
    features = featurize(group)
    expected = naive_leave_last_out_popularity(group.interactions.typed(), False)
    got = evaluate(features, PopularityCount, protocol="leave-last-out", with_baseline=False).metrics
    expected["coverage"] *= group.interactions.frame()["ITEM_ID"].nunique() / features.n_items
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


def _split(truth_lists, protocol):
    ptr = np.cumsum([0] + [len(t) for t in truth_lists])
    items = np.array([i for t in truth_lists for i in t], dtype=np.int64)
    return EvalSplit(
        protocol,
        None,
        np.arange(len(truth_lists)),
        np.zeros(len(truth_lists) + 1, dtype=np.int64),
        np.zeros(0, dtype=np.int64),
        ptr,
        items,
    )


def test_ranking_metrics_by_hand():
    # user 0: truth {3, 9}; recommended 3 at rank 1 and 9 at rank 4
    # user 1: truth {7}; not recommended
    recommended = np.full((2, 25), -1, dtype=np.int64)
    recommended[0, :5] = [3, 1, 2, 9, 4]
    recommended[1, :3] = [1, 2, 4]
    m = ranking_metrics(recommended, _split([[3, 9], [7]], "personalize"), n_items=10)
    dcg0 = 1 / math.log2(2) + 1 / math.log2(5)
    idcg0 = 1 / math.log2(2) + 1 / math.log2(3)
    assert m["precision_at_5"] == pytest.approx((2 / 5 + 0) / 2)
    assert m["precision_at_25"] == pytest.approx((2 / 25) / 2)
    assert m["normalized_discounted_cumulative_gain_at_5"] == pytest.approx(dcg0 / idcg0 / 2)
    assert m["mean_reciprocal_rank_at_25"] == pytest.approx(0.5)
    assert m["coverage"] == pytest.approx(5 / 10)  # items 1, 2, 3, 4, 9


def test_duplicate_truth_items_count_once():
    recommended = np.array([[5, 6, 7, 8, 9] + [-1] * 20])
    m = ranking_metrics(recommended, _split([[5, 5, 5]], "personalize"), n_items=10)
    assert m["precision_at_5"] == pytest.approx(1 / 5)
    assert m["normalized_discounted_cumulative_gain_at_5"] == pytest.approx(1.0)


def test_personalize_split_holds_out_newest_events_of_test_users(movielens):
    _, features = movielens
    split = personalize_split(features, seed=3)
    eligible = (np.bincount(features.interactions["user"], minlength=features.n_users) >= 2).sum()
    assert len(split.test_users) == round(0.1 * eligible)
    assert not np.isin(split.train.interactions["user"].to_numpy(), split.test_users).any()
    indptr, items = features.sequences()
    u0 = split.test_users[0]
    seq = items[indptr[u0] : indptr[u0 + 1]]
    n_in = split.input_indptr[1] - split.input_indptr[0]
    n_truth = split.truth_indptr[1] - split.truth_indptr[0]
    assert n_in + n_truth == len(seq)
    assert n_truth == max(1, math.floor(0.1 * len(seq) + 0.5))
    np.testing.assert_array_equal(split.truth_items[:n_truth], seq[n_in:])
    # deterministic with the seed, different across seeds
    assert np.array_equal(personalize_split(features, seed=3).test_users, split.test_users)
    assert not np.array_equal(personalize_split(features, seed=4).test_users, split.test_users)


def test_leave_last_out_split_shapes(movielens):
    _, features = movielens
    test = leave_last_out_split(features, "test")
    valid = leave_last_out_split(features, "validation")
    lengths = np.bincount(features.interactions["user"], minlength=features.n_users)
    assert len(test.test_users) == (lengths >= 2).sum()
    assert len(valid.test_users) == (lengths >= 3).sum()
    held = np.minimum(2, np.maximum(lengths - 1, 0)).sum()
    assert test.train.n_interactions == features.n_interactions - held
    # a batch's histories come with their events' types and times (a repeat head reads them)
    indptr, items = features.sequences()
    signals = features.event_signals()
    batch = test.batch(slice(3, 9))
    for row, user in enumerate(test.test_users[3:9]):
        lo, hi = batch.history_indptr[row], batch.history_indptr[row + 1]
        expected = slice(indptr[user], indptr[user] + hi - lo)
        assert np.array_equal(batch.history_items[lo:hi], items[expected])
        assert np.array_equal(batch.history_signals[lo:hi], signals[expected])


def test_evaluate_reports_baseline_and_contract_fields(movielens):
    _, features = movielens
    result = evaluate(features, PopularityCount, protocol="personalize")
    payload = result.to_json()
    assert list(payload) == [
        "recipe",
        "protocol",
        "metrics",
        "baseline",
        "lift",
        "train_seconds",
        "train_events_per_second",
        "peak_rss_mb",
        "training",
    ]
    assert isinstance(payload["training"], dict) and json.dumps(payload["training"])  # the recipe's report
    assert result.baseline == result.metrics == payload["baseline"]
    assert all(v == 0.0 for v in payload["lift"].values() if v is not None)
    assert 0 < payload["metrics"]["precision_at_25"] < 1
    assert payload["train_events_per_second"] > 0
