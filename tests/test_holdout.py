"""Metrics users can trust: the time-based holdout, the per-segment breakdown and the
popularity baseline with its lift, checked against plain-Python computations."""

from __future__ import annotations

import numpy as np
import pytest

from personalize_pipeline import cli
from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.errors import InputError
from personalize_pipeline.features import featurize
from personalize_pipeline.metrics import (
    MAX_K,
    evaluate,
    item_popularity_segments,
    parse_cutoff,
    recommend_split,
    segment_breakdown,
    time_split,
)
from personalize_pipeline.recipes import SIMS, PopularityCount

MOVIELENS = "tests/data/movielens-slice"


@pytest.fixture(scope="module")
def features():
    return featurize(read_dataset_group(MOVIELENS))


def test_time_split_trains_before_the_cutoff_and_tests_after(features):
    cutoff = parse_cutoff("2017-01-01")
    split = time_split(features, cutoff)
    assert split.protocol == "time" and split.cutoff == cutoff
    assert (split.train.interactions["timestamp"] < cutoff).all()
    inter = features.interactions
    assert split.train.n_interactions == int((inter["timestamp"] < cutoff).sum())
    for row, user in enumerate(split.test_users[:20]):
        events = inter[inter["user"] == user]
        before = events[events["timestamp"] < cutoff]["item"].to_numpy()
        after = events[events["timestamp"] >= cutoff]["item"].to_numpy()
        assert len(before) and len(after)
        assert list(split.input_items[split.input_indptr[row] : split.input_indptr[row + 1]]) == list(before)
        assert list(split.truth_items[split.truth_indptr[row] : split.truth_indptr[row + 1]]) == list(after)
    active = inter.groupby("user")["timestamp"].agg(["min", "max"])
    expected = np.sort(active.index[(active["min"] < cutoff) & (active["max"] >= cutoff)].to_numpy())
    assert list(split.test_users) == list(expected)
    # default cut-off: about the last 10% of events are held out
    default = time_split(features)
    assert 0.85 <= default.train.n_interactions / features.n_interactions <= 0.95


def test_cutoff_parsing_and_errors(features):
    assert parse_cutoff("1500000000") == 1500000000.0
    assert parse_cutoff("2018-06-01") == parse_cutoff("2018-06-01T00:00:00Z") == 1527811200.0
    with pytest.raises(InputError, match="neither epoch seconds nor an ISO date"):
        parse_cutoff("next tuesday")
    with pytest.raises(InputError, match="leaves no user with events on both sides"):
        time_split(features, parse_cutoff("1990-01-01"))


def test_segment_breakdown_matches_a_plain_python_count(features):
    split = time_split(features)
    model = SIMS().fit(split.train)
    recommended = recommend_split(model, split, MAX_K)
    seg = segment_breakdown(recommended, split, k=10)
    assert sum(r["users"] for r in seg["users_by_history_length"]) == len(split.test_users)
    names = item_popularity_segments(split.train)
    counts = np.bincount(split.train.interactions["item"].to_numpy(), minlength=split.train.n_items)
    assert set(names[counts == 0]) == {"new"} and "new" not in set(names[counts > 0])
    head = counts[names == "head"]
    assert head.min() >= counts[names == "tail"].max()  # head items are the most popular
    assert 0.5 <= head.sum() / counts.sum() < 0.5 + counts.max() / counts.sum()
    by_name = {r["segment"]: r for r in seg["items_by_popularity"]}
    total_truth = len(split.truth_items)
    assert sum(r["truth_events"] for r in by_name.values()) == total_truth
    assert sum(r["share_of_top_10"] for r in by_name.values()) == pytest.approx(1.0)
    for name in ("head", "torso", "tail", "new"):  # recall by hand
        pairs = [
            (row, item)
            for row in range(len(split.test_users))
            for item in split.truth_items[split.truth_indptr[row] : split.truth_indptr[row + 1]]
            if names[item] == name
        ]
        found = sum(item in set(recommended[row, :10]) for row, item in pairs)
        assert by_name[name]["recall_at_10"] == pytest.approx(found / len(pairs) if pairs else 0.0)
    assert by_name["new"]["share_of_top_10"] == 0.0  # nothing recommends items it never saw


def test_every_result_carries_the_baseline_lift_and_segments(features):
    result = evaluate(features, SIMS, protocol="time")
    report = result.report()
    assert report["baseline_popularity"].keys() == result.metrics.keys()
    for name, value in result.metrics.items():
        base = result.baseline[name]
        assert report["lift_over_popularity"][name] == (pytest.approx(value / base - 1.0) if base else None)
    assert report["segments"]["items_by_popularity"] and report["baseline_segments"]["users_by_history_length"]
    assert report["cutoff"] == result.cutoff
    pop = evaluate(features, PopularityCount, protocol="leave-last-out")
    assert pop.baseline == pop.metrics and all(v in (0.0, None) for v in pop.lift.values())


def test_cli_evaluate_time_protocol_reports_baseline_and_segments(capsys):
    code = cli.main(
        [
            "evaluate",
            "--dataset",
            MOVIELENS,
            "--recipe",
            "aws-sims",
            "--protocol",
            "time",
            "--cutoff",
            "2017-01-01",
            "--no-validate",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "time protocol, cut-off 1483228800" in out and "popularity" in out and "lift" in out
    assert "history 101+" in out and "new " in out
    code = cli.main(["evaluate", "--dataset", MOVIELENS, "--recipe", "aws-sims", "--cutoff", "2017-01-01"])
    out, err = capsys.readouterr()
    assert code == 2 and err.strip() == "error: --cutoff applies to --protocol time only"
