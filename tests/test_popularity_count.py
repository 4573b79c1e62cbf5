import numpy as np
import pandas as pd
import pytest

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.errors import InputError
from personalize_pipeline.features import featurize
from personalize_pipeline.recipes import PopularityCount, UserBatch, get_recipe


@pytest.fixture
def features(tmp_path):
    inter = pd.DataFrame(
        {
            # i1: 3 events by 1 user; i2: 2 users; i3: 2 users but 3 events; i4: 1 user
            "USER_ID": ["a", "a", "a", "a", "b", "c", "c", "d", "b"],
            "ITEM_ID": ["i1", "i1", "i1", "i2", "i2", "i3", "i3", "i3", "i4"],
            "TIMESTAMP": range(9),
        }
    )
    inter.to_csv(tmp_path / "interactions.csv", index=False)
    return featurize(read_dataset_group(tmp_path))


def test_counts_unique_users_and_breaks_ties_by_events_then_id(features):
    model = PopularityCount().fit(features)
    ranked = list(features.item_ids[model.order])
    assert ranked == ["i3", "i2", "i1", "i4"]
    np.testing.assert_array_equal(
        model.unique_users[features.item_index(np.array(["i1", "i2", "i3", "i4"]))], [1, 2, 2, 1]
    )
    assert model.scores.sum() == pytest.approx(1.0)


def test_recommend_and_exclude_seen(features):
    model = PopularityCount().fit(features)
    indptr, items = features.sequences()
    users = features.user_index(np.array(["a", "zzz"]))
    batch = UserBatch.from_histories(users, indptr, items)
    top, scores = model.recommend(batch, 3)
    assert [list(features.item_ids[r]) for r in top] == [["i3", "i2", "i1"]] * 2
    assert np.all(np.diff(scores, axis=1) <= 0)
    top, _ = model.recommend(batch, 3, exclude_seen=True)
    assert list(features.item_ids[top[0][top[0] >= 0]]) == ["i3", "i4"]  # a saw i1 and i2
    assert list(features.item_ids[top[1]]) == ["i3", "i2", "i1"]  # unknown user: no history


def test_state_round_trip(features):
    model = PopularityCount().fit(features)
    clone = PopularityCount.from_state({}, model.state())
    np.testing.assert_array_equal(clone.order, model.order)


def test_registry_accepts_arn_and_rejects_unknown():
    assert get_recipe("arn:aws:personalize:::recipe/aws-popularity-count") is PopularityCount
    with pytest.raises(InputError, match="unknown recipe"):
        get_recipe("aws-nope")
    with pytest.raises(InputError, match="no hyperparameter 'hidden_dimension'"):
        PopularityCount(hidden_dimension=3)


def test_score_matrix_matches_recommend(features):
    model = PopularityCount().fit(features)
    batch = UserBatch.from_histories(np.array([0, 1]), *features.sequences())
    scores = model.score(batch)
    assert scores.shape == (2, features.n_items)
    assert scores[0][model.order[0]] == scores[0].max()


def test_movielens_top_item_is_the_most_watched():
    group = read_dataset_group("tests/data/movielens-slice")
    features = featurize(group)
    model = PopularityCount().fit(features)
    df = group.interactions.frame()
    expected = df.groupby("ITEM_ID")["USER_ID"].nunique().sort_values(ascending=False)
    assert features.item_ids[model.order[0]] == expected.index[0]
