import numpy as np
import pandas as pd
import pytest
import torch
from repeat_checks import assert_own_items_ranked_last

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.errors import InputError
from personalize_pipeline.features import featurize
from personalize_pipeline.metrics import evaluate
from personalize_pipeline.recipes import HRNN, UserBatch, get_recipe
from personalize_pipeline.recipes.hrnn import make_windows
from personalize_pipeline.recipes.negatives import PopularitySampler
from personalize_pipeline.simulation import split_as_of
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


def test_length_buckets_trim_padding_without_changing_the_loss(features):
    model = HRNN(epochs=1, dropout_embed=0.0, dropout_hidden=0.0).fit(features)
    windows = model._windows(features)
    lengths = (windows.targets >= 0).sum(dim=1)
    idx = torch.argsort(lengths)[:64]  # the shortest windows
    width, bptt = int(lengths[idx].max()), model.params["bptt"]
    assert width < bptt

    def loss(steps):
        sampler = PopularitySampler(model.fit_state.popularity, 64, 0.75, np.random.default_rng(0), cache_batches=1)
        return model._batch_loss(windows, idx, sampler, sampler.log_q, False, torch.device("cpu"), steps)

    (trimmed, w_trimmed), (padded, w_padded) = loss(width), loss(bptt)
    torch.testing.assert_close(trimmed, padded)
    assert torch.equal(w_trimmed, w_padded)
    assert HRNN.resolve_hyperparameters({})["length_buckets"] is False  # aws-hrnn trains as before


def test_full_softmax_where_the_sample_would_cover_the_trained_catalogue(features):
    model = HRNN(epochs=1, dropout_embed=0.0, dropout_hidden=0.0).fit(features)
    n_trained, rng = int(model.fit_state.trained.sum()), np.random.default_rng(0)
    assert n_trained <= 2048 and model.training_stats()["loss"] == "full softmax"
    assert model._sampler(100_000, rng) is None  # auto: 2048 negatives >= the trained items
    model.params["n_sample"] = n_trained - 1
    assert model._sampler(100_000, rng).n_sample == n_trained - 1
    # the full-softmax loss is the cross-entropy over the trained items only
    windows = model._windows(features)
    idx, bptt = torch.arange(32), model.params["bptt"]
    log_q = torch.from_numpy(np.where(model.fit_state.trained, 0.0, np.inf).astype(np.float32))
    loss, _ = model._batch_loss(windows, idx, None, log_q, False, torch.device("cpu"), bptt)
    with torch.no_grad():
        mask = windows.targets[idx] >= 0
        states = model.net(windows.inputs[idx], None, windows.users[idx])[mask]
        logits = states @ model.net.item_vectors().T + model.net.bias
        logits[:, torch.from_numpy(~model.fit_state.trained)] = -torch.inf
        expected = torch.nn.functional.cross_entropy(logits, windows.targets[idx][mask], reduction="none")
    torch.testing.assert_close(loss.detach(), expected)
    assert torch.isfinite(loss).all()


def test_hyperparameters_follow_personalize():
    params = HRNN.resolve_hyperparameters({})
    assert params["hidden_dimension"] == 43 and params["bptt"] == 32 and params["recency_mask"] is True
    assert params["max_user_history_length_percentile"] == 0.99
    with pytest.raises(InputError, match="bptt: 40 is out of range"):
        HRNN(bptt="40")
    with pytest.raises(InputError, match="hidden_dimension: 16 is out of range"):
        HRNN(hidden_dimension=16)
    assert get_recipe("arn:aws:personalize:::recipe/aws-hrnn") is HRNN


@pytest.mark.slow
def test_beats_popularity_on_sessions(features):
    result = evaluate(features, HRNN, FAST, protocol="leave-last-out")
    ndcg = result.metrics["normalized_discounted_cumulative_gain_at_10"]
    base = result.baseline["normalized_discounted_cumulative_gain_at_10"]
    assert ndcg > 2.0 * base, (ndcg, base)
    assert result.train_events_per_second is not None and result.train_seconds > 0


@pytest.mark.slow
def test_deterministic_with_seed(features):
    batch = UserBatch.from_histories(np.arange(20), *features.sequences())
    a = HRNN(**FAST).fit(features, seed=5).logits(batch)
    b = HRNN(**FAST).fit(features, seed=5).logits(batch)
    c = HRNN(**FAST).fit(features, seed=6).logits(batch)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.slow
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
    assert list(items_a[3]) == list(np.argsort(-loaded.recipe.fit_state.popularity, kind="stable")[:10])
    # items never seen in training are never recommended
    assert loaded.recipe.fit_state.trained[items_a].all()
    assert version.manifest["training"]["epochs_run"] == 3


@pytest.mark.slow
def test_update_refreshes_the_item_side_only(demo_small, tmp_path):
    """UPDATE keeps the FULL network, learns the new items from the new events in one pass
    and recomputes the states of the users with new events only."""
    ts = pd.read_csv(demo_small / "interactions.csv", usecols=["TIMESTAMP"])["TIMESTAMP"]
    split_as_of(demo_small, tmp_path / "before", int(ts.quantile(0.9)))
    config = SolutionConfig("aws-hrnn", {"epochs": "6"})
    before, after = featurize(read_dataset_group(tmp_path / "before")), featurize(read_dataset_group(demo_small))
    full = train(before, config, tmp_path / "sol")
    update = train(after, config, tmp_path / "sol", training_mode="UPDATE")
    stats = update.manifest["training"]
    assert update.manifest["base_version"] == full.version_id
    assert stats["epochs_run"] == 1 and stats["windows"] < 0.5 * full.manifest["training"]["windows"]
    assert stats["warm_started_items"] == len(set(full.item_ids) & set(update.item_ids))
    # the network does not move; the vectors of the items FULL trained do not either
    old, new = full.recipe.net.state_dict(), update.recipe.net.state_dict()
    for name in old:
        if name.startswith("gru."):
            torch.testing.assert_close(old[name], new[name])
    known = [i for i in full.item_ids[full.recipe.fit_state.trained] if i in set(update.item_ids)]
    torch.testing.assert_close(
        old["embedding.weight"][full.item_codes(np.array(known, dtype=object))],
        new["embedding.weight"][update.item_codes(np.array(known, dtype=object))],
    )
    # items first interacted with after FULL become recommendable, with learned vectors
    fresh_ids = sorted(
        set(update.item_ids[update.recipe.fit_state.trained]) - set(full.item_ids[full.recipe.fit_state.trained])
    )
    assert len(fresh_ids) >= 3
    codes = torch.from_numpy(update.item_codes(np.array(fresh_ids, dtype=object)))
    torch.manual_seed(42)  # the initial weights of the UPDATE's network (fit's seed)
    initial = HRNN(**update.recipe.params)._build(len(update.item_ids)).embedding.weight.detach()
    moved = (new["embedding.weight"][codes] - initial[codes]).norm(dim=1)
    assert (moved > 1e-3).all(), moved
    never = torch.from_numpy(
        np.flatnonzero(~update.recipe.fit_state.trained & ~np.isin(update.item_ids, full.item_ids))
    )
    assert len(never) and torch.equal(new["embedding.weight"][never], initial[never])  # no events: left at their start
    # users without new events keep their cached state; the others are recomputed
    since = full.recipe.fit_state.latest_time
    inter = after.interactions
    active = set(update.user_ids[inter["user"].to_numpy()[inter["timestamp"].to_numpy() > since]])
    quiet = np.array([u for u in full.user_ids if u not in active][:50], dtype=object)
    np.testing.assert_allclose(
        full.recipe.fit_state.user_state[full.user_codes(quiet)],
        update.recipe.fit_state.user_state[update.user_codes(quiet)],
        atol=1e-6,
    )
    busy = np.array(sorted(active), dtype=object)
    fresh = UserBatch.from_histories(update.user_codes(busy), update.history_indptr, update.history_items)
    np.testing.assert_allclose(
        update.recipe.logits(update.user_batch(update.user_codes(busy))),
        update.recipe.logits(fresh),
        rtol=1e-4,
        atol=1e-4,
    )
    # much cheaper than FULL, and the UPDATE version loads back and can be updated again
    assert update.manifest["timings"]["train_seconds"] < 0.5 * full.manifest["timings"]["train_seconds"]
    loaded = load_solution_version(tmp_path / "sol")
    assert loaded.version_id == update.version_id and loaded.recipe.fit_state.latest_time == float(
        inter["timestamp"].max()
    )


@pytest.mark.slow
def test_update_of_a_version_without_its_latest_time_fine_tunes(features):
    """Versions saved before the latest event time was stored are warm-started instead."""
    full = HRNN(epochs=8).fit(features)
    full.fit_state.latest_time = None
    update = full.update(features, previous_item_ids=features.item_ids)
    assert (
        update.training_stats()["epochs_run"] == 2 and update.training_stats()["warm_started_items"] == features.n_items
    )


@pytest.mark.parametrize("recipe", ["aws-hrnn", "aws-hrnn-metadata", "aws-user-personalization"])
@pytest.mark.slow
def test_cached_user_states_match_running_the_network(features, tmp_path, recipe):
    """Batch inference over a solution version's own users looks their GRU states up; the
    result equals running the network over the same histories."""
    train(features, SolutionConfig(recipe, {"epochs": "2", "hidden_dimension": "32"}), tmp_path / "sol")
    loaded = load_solution_version(tmp_path / "sol")
    assert loaded.recipe.fit_state.user_state.shape == (features.n_users, 32)
    codes = np.array([0, 3, 7, 50, -1])
    stored = loaded.user_batch(codes)
    fresh = UserBatch(stored.users, stored.history_indptr, stored.history_items, stored.history_context)
    assert stored.stored and not fresh.stored
    np.testing.assert_allclose(loaded.recipe.logits(stored), loaded.recipe.logits(fresh), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def walks(tmp_path_factory):
    """Users walk a cycle of 30 items from random starts: nobody has an item twice."""
    rng = np.random.default_rng(0)
    rows = [
        (f"u{u}", f"i{(start + k) % 30}", 1_000_000 + u * 100 + k)
        for u, start in enumerate(rng.integers(30, size=150))
        for k in range(10)
    ]
    path = tmp_path_factory.mktemp("walks")
    pd.DataFrame(rows, columns=["USER_ID", "ITEM_ID", "TIMESTAMP"]).to_csv(path / "interactions.csv", index=False)
    return featurize(read_dataset_group(path))


@pytest.mark.parametrize("recipe", ["aws-hrnn", "aws-user-personalization"])
def test_items_nobody_repeats_are_not_recommended_again(walks, recipe):
    """The repeat-aware scores put each user's own items below every other item, in the
    top-k path (with exploration too) and in ``score``; scores stay a distribution."""
    from personalize_pipeline.recipes.user_personalization import ExplorationConfig

    torch.set_num_threads(1)
    model = get_recipe(recipe)(epochs=4).fit(walks)
    k = 30 - 10  # every user has 10 of the 30 items: the others fill the list exactly
    batch, indptr, items = assert_own_items_ranked_last(model, walks, k)
    raw_model = get_recipe(recipe)(epochs=4, repeat_aware=False).fit(walks)

    def own_items(lists: np.ndarray) -> int:
        return sum(len(set(lists[u]) & set(items[indptr[u] : indptr[u + 1]])) for u in range(walks.n_users))

    assert own_items(raw_model.recommend(batch, k)[0]) > 0
    if recipe == "aws-user-personalization":  # exploration's picks weigh the same scores
        exploring = ExplorationConfig(weight=0.5, item_age_cut_off=1e9)
        mixed = own_items(model.recommend(batch, k, exploration=exploring)[0])
        assert mixed < own_items(raw_model.recommend(batch, k, exploration=exploring)[0])


def test_packed_training_forward_gives_the_padded_states_on_real_steps():
    """Training runs only each window's real steps (a packed sequence); their states are the
    padded run's, and a window without targets does not fail."""
    from personalize_pipeline.recipes.hrnn import GRUNet

    torch.manual_seed(0)
    net = GRUNet(30, 8, 0.0, 0.0).eval()
    items = torch.randint(0, 30, (5, 7))
    lengths = torch.tensor([7, 4, 1, 0, 2])
    packed, padded = net(items, lengths=lengths), net(items)
    real = torch.arange(7)[None, :] < lengths[:, None]
    assert packed.shape == padded.shape
    torch.testing.assert_close(packed[real], padded[real], rtol=1e-5, atol=1e-6)
    assert (packed[~real & (lengths[:, None] > 0)] == 0).all()  # padding: zeros, masked out by training
