import numpy as np
import pytest

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.errors import InputError
from personalize_pipeline.features import featurize
from personalize_pipeline.metrics import evaluate
from personalize_pipeline.recipes import HRNN, UserBatch, get_recipe
from personalize_pipeline.recipes.hrnn import make_windows
from personalize_pipeline.store import load_solution_version
from personalize_pipeline.training import SolutionConfig, train

FAST = {"epochs": 6}


@pytest.fixture(scope="module")
def features(demo_small):
    return featurize(read_dataset_group(demo_small))


def test_windows_cover_every_transition_once():
    indptr = np.array([0, 1, 4, 40])
    items = np.arange(40)
    x, y, first = make_windows(indptr, items, bptt=8)
    # user 0: 0 transitions; user 1: 2 -> 1 window; user 2: 35 -> 5 windows
    assert x.shape == (6, 8)
    targets = y[y >= 0]
    assert sorted(targets.tolist()) == [2, 3] + list(range(5, 40))
    row = x[0][y[0] >= 0].tolist(), y[0][y[0] >= 0].tolist()
    assert row == ([1, 2], [2, 3])
    assert first[0] == 2


def test_hyperparameters_follow_personalize():
    params = HRNN.resolve_hyperparameters({})
    assert params["hidden_dimension"] == 43 and params["bptt"] == 32 and params["recency_mask"] is True
    assert params["max_user_history_length_percentile"] == 0.99
    with pytest.raises(InputError, match="bptt: 40 is out of range"):
        HRNN(bptt="40")
    with pytest.raises(InputError, match="hidden_dimension: 16 is out of range"):
        HRNN(hidden_dimension=16)
    assert get_recipe("arn:aws:personalize:::recipe/aws-hrnn") is HRNN


def test_beats_popularity_on_sessions(features):
    result = evaluate(features, HRNN, FAST, protocol="leave-last-out")
    ndcg = result.metrics["normalized_discounted_cumulative_gain_at_10"]
    base = result.baseline["normalized_discounted_cumulative_gain_at_10"]
    assert ndcg > 2.0 * base, (ndcg, base)
    assert result.train_events_per_second is not None and result.train_seconds > 0


def test_deterministic_with_seed(features):
    batch = UserBatch.from_histories(np.arange(20), *features.sequences())
    a = HRNN(**FAST).fit(features, seed=5).logits(batch)
    b = HRNN(**FAST).fit(features, seed=5).logits(batch)
    c = HRNN(**FAST).fit(features, seed=6).logits(batch)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_save_load_and_recommend(features, tmp_path):
    version = train(features, SolutionConfig("aws-hrnn", {"epochs": "3"}), tmp_path / "sol")
    loaded = load_solution_version(tmp_path / "sol")
    batch = loaded.user_batch(np.array([0, 1, 2, -1]))
    items_a, scores_a = version.recipe.recommend(batch, 10)
    items_b, scores_b = loaded.recipe.recommend(batch, 10)
    np.testing.assert_array_equal(items_a, items_b)
    np.testing.assert_allclose(scores_a, scores_b, rtol=1e-6)
    assert np.all(np.diff(scores_a, axis=1) <= 1e-7) and np.all(scores_a > 0) and np.all(scores_a.sum(1) <= 1.0 + 1e-6)
    # the unknown user (no history) gets the most popular items
    assert list(items_a[3]) == list(np.argsort(-loaded.recipe.popularity, kind="stable")[:10])
    # items never seen in training are never recommended
    assert loaded.recipe.trained[items_a].all()
    assert version.manifest["training"]["epochs_run"] == 3


def test_update_warm_starts_from_the_full_version(features, tmp_path):
    config = SolutionConfig("aws-hrnn", {"epochs": "8"})
    full = train(features, config, tmp_path / "sol")
    update = train(features, config, tmp_path / "sol", training_mode="UPDATE")
    stats = update.manifest["training"]
    assert update.manifest["base_version"] == full.version_id
    assert stats["warm_started_items"] == features.n_items
    assert stats["epochs_run"] == 2  # a quarter of the FULL epochs
    # starting from the FULL weights, the update keeps the ranking close to the FULL model's
    batch = UserBatch.from_histories(np.arange(30), *features.sequences())
    a, _ = full.recipe.recommend(batch, 10)
    b, _ = update.recipe.recommend(batch, 10)
    overlap = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b)])
    assert overlap > 0.5


@pytest.mark.parametrize("recipe", ["aws-hrnn", "aws-hrnn-metadata", "aws-user-personalization"])
def test_cached_user_states_match_running_the_network(features, tmp_path, recipe):
    """Batch inference over a solution version's own users looks their GRU states up; the
    result equals running the network over the same histories."""
    train(features, SolutionConfig(recipe, {"epochs": "2", "hidden_dimension": "32"}), tmp_path / "sol")
    loaded = load_solution_version(tmp_path / "sol")
    assert loaded.recipe.user_state.shape == (features.n_users, 32)
    codes = np.array([0, 3, 7, 50, -1])
    stored = loaded.user_batch(codes)
    fresh = UserBatch(stored.users, stored.history_indptr, stored.history_items, stored.history_context)
    assert stored.stored and not fresh.stored
    np.testing.assert_allclose(loaded.recipe.logits(stored), loaded.recipe.logits(fresh), rtol=1e-4, atol=1e-5)
