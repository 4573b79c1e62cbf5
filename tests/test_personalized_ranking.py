import json

import numpy as np
import pytest

from personalize_pipeline.batch import run_batch_job
from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.features import featurize
from personalize_pipeline.recipes import PersonalizedRanking, get_recipe
from personalize_pipeline.training import SolutionConfig, train


@pytest.fixture(scope="module")
def ranking_solution(demo_small, tmp_path_factory):
    features = featurize(read_dataset_group(demo_small))
    version = train(
        features, SolutionConfig("aws-personalized-ranking", {"epochs": "3"}), tmp_path_factory.mktemp("rank")
    )
    return version, features


def test_recipe_is_registered_with_personalize_type():
    cls = get_recipe("arn:aws:personalize:::recipe/aws-personalized-ranking")
    assert cls is PersonalizedRanking and cls.recipe_type == "PERSONALIZED_RANKING"
    assert cls.resolve_hyperparameters({})["hidden_dimension"] == 43


@pytest.mark.slow
def test_rank_orders_by_model_and_appends_unknown(ranking_solution):
    version, features = ranking_solution
    model = version.recipe
    batch = version.user_batch(np.array([0, 1]))
    lists = np.array([[5, -1, 7, 9, 11], [3, 4, -1, -1, -1]])
    order, scores = model.rank(batch, lists)
    logits = model.logits(batch)
    for row in range(2):
        known = [c for c in lists[row] if c >= 0]
        expected = sorted(known, key=lambda c: -logits[row, c])
        ranked = [lists[row][p] for p in order[row] if lists[row][p] >= 0]
        assert ranked == expected
        finite = scores[row][~np.isnan(scores[row])]
        assert finite.sum() == pytest.approx(1.0, abs=1e-5)
        assert np.all(np.diff(finite) <= 1e-7)
        assert np.isnan(scores[row][len(known) :]).all()


@pytest.mark.slow
def test_batch_job_for_ranking(ranking_solution, tmp_path):
    version, features = ranking_solution
    ids = list(features.item_ids[:6])
    lines = [
        {"userId": features.user_ids[0], "itemList": ids + ["no-such-item"]},
        {"userId": "stranger", "itemList": ids[:3]},
        {"userId": features.user_ids[1], "itemList": ["x"] * 501},
        {"userId": features.user_ids[1]},
        {"itemId": ids[0]},
    ]
    job = tmp_path / "rank.jsonl"
    job.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = run_batch_job(version, job, tmp_path / "out")
    rows = [json.loads(line) for line in (tmp_path / "out" / "rank.jsonl.out").read_text().splitlines()]
    assert result.errors == 3
    first = rows[0]["output"]
    assert sorted(first["recommendedItems"]) == sorted(ids + ["no-such-item"])
    assert first["recommendedItems"][-1] == "no-such-item" and first["scores"][-1] is None
    assert sum(first["scores"][:-1]) == pytest.approx(1.0, abs=1e-4)
    assert sorted(rows[1]["output"]["recommendedItems"]) == sorted(ids[:3])  # unknown user: still ranked
    assert "at most 500" in rows[2]["error"]
    assert "itemList" in rows[3]["error"]
    assert "userId" in rows[4]["error"]
