"""aws-user-personalization-v2 / aws-personalized-ranking-v2 (SASRec family) and the
training units they are built from (negative sampler, losses, weight averaging)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from repeat_checks import CLICK, assert_own_items_ranked_last, paired_log

from personalize_pipeline.batch import run_batch_job
from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.errors import InputError
from personalize_pipeline.features import featurize
from personalize_pipeline.recipes import PersonalizedRankingV2, UserBatch, UserPersonalizationV2, get_recipe
from personalize_pipeline.recipes.averaging import WeightAverage
from personalize_pipeline.recipes.losses import full_softmax_xe, sampled_softmax_xe_logq
from personalize_pipeline.recipes.negatives import PopularitySampler
from personalize_pipeline.recipes.repeats import RECENCY_FALLBACK, RECENCY_WEIGHTS
from personalize_pipeline.recipes.sasrec import SASRecNet, end_aligned_windows, last_items
from personalize_pipeline.recipes.user_personalization_v2 import HELD_OUT_STEPS, shuffled_batches
from personalize_pipeline.store import load_solution_version
from personalize_pipeline.training import SolutionConfig, train
from personalize_pipeline.tuning import default_recipe_list

N_ITEMS = 24
TINY = {
    "hidden_dimension": 32,
    "epochs": 12,
    "batch_size": 32,
    "learning_rate": 0.01,
    "dropout": 0.1,
    "max_sequence_length": 10,
}


def cycle_dataset(path, users=160, length=12, n_items=N_ITEMS, extra_item_after=None):
    """Every user walks the cycle i -> i + 1 (mod n_items) from a random start: the next
    item is a deterministic function of the last one. ``extra_item_after`` (a time) adds
    events after that time in which users go from the last item of the cycle to a new
    item ``new`` instead of wrapping around."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(users):
        start = int(rng.integers(n_items))
        for k in range(length):
            rows.append((f"u{u}", f"i{(start + k) % n_items}", 1_000_000 + u * 100 + k))
    frame = pd.DataFrame(rows, columns=["USER_ID", "ITEM_ID", "TIMESTAMP"])
    if extra_item_after is not None:
        late = [
            (f"v{u}", f"i{n_items - 1}" if k % 2 == 0 else "new", extra_item_after + 10 + u * 10 + k)
            for u in range(40)
            for k in range(5)
        ]
        frame = pd.concat([frame, pd.DataFrame(late, columns=frame.columns)])
    path.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path / "interactions.csv", index=False)
    return path


@pytest.fixture(scope="module")
def cycle(tmp_path_factory):
    return featurize(read_dataset_group(cycle_dataset(tmp_path_factory.mktemp("cycle"))))


@pytest.fixture(scope="module")
def model(cycle):
    torch.set_num_threads(1)
    return UserPersonalizationV2(**TINY).fit(cycle)


def _next_item_accuracy(recipe, features, n_items=N_ITEMS):
    """Share of one-item histories whose top recommendation is the next item of the cycle."""
    codes = features.item_index(np.array([f"i{i}" for i in range(n_items)], dtype=object))
    expected = features.item_index(np.array([f"i{(i + 1) % n_items}" for i in range(n_items)], dtype=object))
    batch = UserBatch(np.full(n_items, -1), np.arange(n_items + 1), codes)
    top, _ = recipe.recommend(batch, 1)
    return float((top[:, 0] == expected).mean())


def test_learns_a_deterministic_sequence(model, cycle):
    assert _next_item_accuracy(model, cycle) >= 0.9
    assert model.training_stats()["loss"] == "full softmax cross-entropy"
    losses = model.training_stats()["loss_by_epoch"]
    assert losses[-1] < 0.5 * losses[0]


def test_sampled_softmax_with_logq_learns_too(cycle):
    torch.set_num_threads(1)
    sampled = UserPersonalizationV2(**TINY, n_sample=8).fit(cycle)
    assert sampled.training_stats()["loss"].startswith("sampled softmax, 8 negatives")
    assert _next_item_accuracy(sampled, cycle) >= 0.8


def test_no_epoch_starts_that_would_end_past_the_time_budget(cycle):
    torch.set_num_threads(1)
    budgeted = UserPersonalizationV2(**{**TINY, "epochs": 500, "max_training_seconds": 1.0}).fit(cycle)
    stats = budgeted.training_stats()
    assert stats["epochs_planned"] == 500
    assert 1 <= stats["epochs_run"] < 500
    assert stats["epochs_run"] * stats["seconds_per_epoch"] <= 1.0 + 2 * stats["seconds_per_epoch"]


def test_early_stopping_holds_out_newest_events_and_stops_at_the_plateau(tmp_path):
    torch.set_num_threads(1)
    features = featurize(read_dataset_group(cycle_dataset(tmp_path / "many", users=400)))
    params = {**TINY, "epochs": 60, "early_stopping_patience": 2, "validation_share": 0.5}
    recipe = UserPersonalizationV2(**params).fit(features)
    stats = recipe.training_stats()
    assert stats["held_out_users"] == 400  # small data: every user (each has 11 transitions)
    assert stats["training_events"] == 400 * 11 - 400 * HELD_OUT_STEPS  # their newest transitions
    scores = stats["held_out_ndcg10_by_epoch"]
    assert len(scores) == stats["epochs_run"] < 60  # the cycle is learnt long before 60 epochs
    assert stats["early_stopping_best_epoch"] == stats["epochs_run"] - 2
    assert max(scores) == scores[stats["early_stopping_best_epoch"] - 1] >= 0.9
    assert _next_item_accuracy(recipe, features) >= 0.9
    by_weight = stats["held_out_ndcg10_by_repeat_recency"]  # the kept weights, scored with each recency weight
    names = [*map(str, RECENCY_WEIGHTS), "unmixed"]
    assert str(stats["repeat_recency_chosen"]) == names[int(np.argmax([by_weight[n] for n in names]))]
    mixture = recipe.fit_state.repeat_mixture(recipe.params)
    assert (
        (mixture is None)
        if stats["repeat_recency_chosen"] == "unmixed"
        else (mixture.recency_weight == stats["repeat_recency_chosen"])
    )
    assert by_weight[str(RECENCY_FALLBACK)] == pytest.approx(max(scores), abs=1e-4)


def test_cached_states_equal_recomputed_states(model, cycle):
    indptr, items = cycle.sequences()
    users = np.arange(cycle.n_users)
    fresh = UserBatch.from_histories(users, indptr, items)
    stored = UserBatch.from_histories(users, indptr, items)
    stored.stored = True
    np.testing.assert_allclose(model.logits(stored), model.logits(fresh), rtol=1e-4, atol=1e-4)


def test_save_load_round_trip_gives_identical_scores(model, cycle, tmp_path):
    version = train(cycle, SolutionConfig("aws-user-personalization-v2", TINY), tmp_path / "sol")
    loaded = load_solution_version(tmp_path / "sol")
    batch = loaded.user_batch(np.arange(20))
    np.testing.assert_array_equal(loaded.recipe.score(batch), version.recipe.score(batch))
    again = UserPersonalizationV2.from_state(model.params, model.state())
    plain = UserBatch.from_histories(np.arange(20), *cycle.sequences())
    np.testing.assert_array_equal(again.score(plain), model.score(plain))
    assert again.score(plain).sum(axis=1) == pytest.approx(np.ones(20), abs=1e-4)


def test_exclude_seen_and_filters_apply(model, cycle):
    batch = UserBatch.from_histories(np.arange(10), *cycle.sequences())
    items, _ = model.recommend(batch, 5, exclude_seen=True)
    rows, seen = batch.seen_mask_rows_cols()
    assert not any(item in set(seen[rows == r]) for r in range(10) for item in items[r])
    allowed = np.zeros((10, cycle.n_items), dtype=bool)
    allowed[:, :3] = True
    items, _ = model.recommend(batch, 5, allowed=allowed)
    assert (items[:, :3] < 3).all() and (items[:, 3:] == -1).all()


def test_update_adds_new_items_and_keeps_the_network(tmp_path):
    torch.set_num_threads(1)
    cut = 2_000_000
    features = featurize(read_dataset_group(cycle_dataset(tmp_path / "data", extra_item_after=cut)))
    old = features.with_interactions(features.interactions[features.interactions["timestamp"] <= cut])
    full = UserPersonalizationV2(**TINY).fit(old)
    new = features.item_index(np.array(["new"], dtype=object))[0]
    assert not full.fit_state.trained[new]  # no events before the cut: never recommended by FULL
    full_state = {k: v.copy() for k, v in full.state().items()}
    updated = UserPersonalizationV2.from_state(full.params, full_state).update(
        features, previous_item_ids=features.item_ids, previous_user_ids=features.user_ids
    )
    assert updated.fit_state.trained[new] and updated.n_items == features.n_items
    assert updated.training_stats()["carried_items"] == N_ITEMS
    state = updated.state()
    for name, value in full_state.items():  # the network did not move
        if name.startswith("net.") and name != "net.embedding.weight":
            np.testing.assert_array_equal(state[name], value, err_msg=name)
    known = np.flatnonzero(full.fit_state.trained)
    np.testing.assert_array_equal(state["net.embedding.weight"][known], full_state["net.embedding.weight"][known])
    assert not np.array_equal(state["net.embedding.weight"][new], full_state["net.embedding.weight"][new])
    # the refresh learned where the new item follows: it scores higher for the users of the
    # new events (history ending with the last item of the cycle) than for the others; the
    # network's own logits (the late users have the new item: repeat mixing would move it)
    updated.params["repeat_aware"] = False
    late = features.user_index(np.array([f"v{u}" for u in range(40)], dtype=object))
    others = features.user_index(np.array([f"u{u}" for u in range(40)], dtype=object))
    logits = {}
    for name, users in (("late", late), ("others", others)):
        batch = UserBatch.from_histories(users, *features.sequences())
        batch.stored = True
        logits[name] = updated.logits(batch)[:, new]
    assert np.isfinite(logits["late"]).all() and logits["late"].mean() > logits["others"].mean()
    # users without new events keep their cached state; the others were recomputed
    reused = features.user_index(np.array(["u0"], dtype=object))[0]
    np.testing.assert_array_equal(updated.fit_state.user_state[reused], full.fit_state.user_state[reused])
    assert np.abs(updated.fit_state.user_state[late]).sum(axis=1).min() > 0


def test_ranking_recipe_reorders_the_item_list(cycle, tmp_path):
    torch.set_num_threads(1)
    train(cycle, SolutionConfig("aws-personalized-ranking-v2", TINY), tmp_path / "rank")
    version = load_solution_version(tmp_path / "rank")
    assert version.recipe_type == "PERSONALIZED_RANKING"
    user = version.user_ids[0]
    last = version.item_ids[version.history_items[version.history_indptr[1] - 1]]
    nxt = f"i{(int(last[1:]) + 1) % N_ITEMS}"
    others = [i for i in (f"i{k}" for k in range(N_ITEMS)) if i not in (nxt,)][:6]
    job = tmp_path / "job.jsonl"
    job.write_text(json.dumps({"userId": user, "itemList": [*others, "unknown-item", nxt]}) + "\n")
    run_batch_job(tmp_path / "rank", job, tmp_path / "out")
    (line,) = [json.loads(x) for x in (tmp_path / "out" / "job.jsonl.out").read_text().splitlines()]
    ranked, scores = line["output"]["recommendedItems"], line["output"]["scores"]
    assert ranked[0] == nxt and ranked[-1] == "unknown-item" and scores[-1] is None
    assert sorted(ranked) == sorted([*others, "unknown-item", nxt])
    assert sum(scores[:-1]) == pytest.approx(1.0, abs=1e-5) and scores[:-1] == sorted(scores[:-1], reverse=True)


def test_registered_with_hyperparameters_and_in_automl():
    assert get_recipe("arn:aws:personalize:::recipe/aws-user-personalization-v2") is UserPersonalizationV2
    assert get_recipe("aws-personalized-ranking-v2") is PersonalizedRankingV2
    params = UserPersonalizationV2.resolve_hyperparameters({})
    assert params["hidden_dimension"] == 64 and params["max_sequence_length"] == 50
    assert {hp.name for hp in UserPersonalizationV2.hyperparameters if hp.tunable} >= {
        "hidden_dimension",
        "learning_rate",
        "dropout",
    }
    assert "aws-user-personalization-v2" in default_recipe_list(None)
    with pytest.raises(InputError, match="num_heads"):
        UserPersonalizationV2(hidden_dimension=30, num_heads=4)


@pytest.mark.parametrize("n_items, negatives", [(355, 0), (12101, 0), (32768, 0), (32769, 4096)])
def test_full_softmax_where_the_catalogue_allows_it(n_items, negatives):
    """Automatic loss: the full softmax up to 32,768 items, 4,096 sampled negatives above;
    the automatic schedule gives cheaper events more passes (within 4 to 100)."""
    model = UserPersonalizationV2()
    model.n_items, model.fit_state.trained = n_items, np.ones(n_items, dtype=bool)
    assert model._negatives() == negatives
    assert 4 <= model.auto_epochs(10_000_000) <= model.auto_epochs(200_000) <= model.auto_epochs(1_000) == 100
    assert UserPersonalizationV2(n_sample=64)._negatives() == 0  # no catalogue yet: nothing to sample from


def test_windows_end_at_the_newest_event_and_cover_every_transition():
    indptr = np.array([0, 5, 6, 9])
    items = np.array([1, 2, 3, 4, 5, 7, 8, 9, 10])
    inputs, targets, positions = end_aligned_windows(indptr, items, 3, pad=99)
    # user 0: 4 transitions -> windows [3,4,5] and [.,.,2]; user 1: none; user 2: [.,9,10]
    assert targets.tolist() == [[3, 4, 5], [-1, -1, 2], [-1, 9, 10]]
    assert inputs.tolist() == [[2, 3, 4], [99, 99, 1], [99, 8, 9]]
    assert positions[0].tolist() == [2, 3, 4]
    rows, window = last_items(indptr, items, 2, pad=99)
    assert rows.tolist() == [0, 1, 2] and window.tolist() == [[4, 5], [99, 7], [9, 10]]


def test_overlapping_windows_train_every_target_once_with_long_context():
    """With a stride shorter than the window, each target is owned by one window (the
    newest ``stride`` positions, or any position of a user's oldest window) and, where the
    history allows, sees at least ``length - stride`` earlier events."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 40, size=60)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    items = rng.integers(0, 50, size=int(indptr[-1]))
    length, stride = 8, 2
    inputs, targets, positions = end_aligned_windows(indptr, items, length, pad=99, stride=stride)
    owned = positions[positions >= 0]
    expected = np.concatenate([np.arange(indptr[u] + 1, indptr[u + 1]) for u in range(60)])
    assert np.sort(owned).tolist() == np.sort(expected).tolist()  # every transition once
    assert (targets[positions >= 0] == items[owned]).all()
    user = np.searchsorted(indptr, owned, side="right") - 1
    column = np.nonzero(positions >= 0)[1]
    context = owned - indptr[user]  # earlier events the history has
    assert (column + 1 >= np.minimum(context, length - stride + 1)).all()
    real = inputs != 99
    assert (real.sum(1) == real[:, ::-1].cumprod(1).sum(1)).all()  # left-padded
    # each real input is the event before its position
    row, col = np.nonzero(real)
    pos = (positions.max(1, keepdims=True) - (length - 1) + np.arange(length))[row, col]
    assert (inputs[row, col] == items[pos - 1]).all()


def _padded_states(net: SASRecNet, items: torch.Tensor) -> torch.Tensor:
    """The network computed over the whole padded [B, T] batch, as SASRec does (padded
    positions zeroed and masked out as keys; fused attention): [B, T, d]."""
    b, t = items.shape
    real = items < net.n_items
    x = (net.item_vectors(items) * net.input_scale + net.position.weight[-t:]) * real.unsqueeze(-1)
    allowed = (torch.ones(t, t, dtype=torch.bool).tril()[None] & real[:, None, :]) | torch.eye(t, dtype=torch.bool)
    for block in net.blocks:
        d = x.shape[-1]
        qkv = block.qkv(block.ln_attention(x)).view(b, t, 3, block.heads, d // block.heads).permute(2, 0, 3, 1, 4)
        attended = torch.nn.functional.scaled_dot_product_attention(*qkv, attn_mask=allowed.unsqueeze(1))
        x = x + block.project(attended.transpose(1, 2).reshape(b, t, d))
        x = x + block.feed_forward(block.ln_feed_forward(x))
    return net.ln_out(x)


@pytest.mark.parametrize("training", [False, True])
def test_packed_positions_give_the_padded_networks_states_and_gradients(training):
    """The blocks run on the real positions only (padding costs nothing); states and
    gradients equal the network run over the padded batch. In training, the attention runs
    unfused so its weights can get the dropout: checked with a rate that keeps every unit."""
    torch.manual_seed(0)
    n_items, width = 30, 12
    net = SASRecNet(n_items, 16, 2, 2, width, dropout=1e-9 if training else 0.0, scale_items=True)
    net.train(training)
    rng = np.random.default_rng(0)
    lengths = np.array([1, 12, 3, 7, 1, 5])
    items = np.full((len(lengths), 10), n_items)  # a batch trimmed to 10 of the 12 positions
    for row, length in enumerate(lengths):
        items[row, 10 - min(length, 10) :] = rng.integers(0, n_items, size=min(length, 10))
    x = torch.from_numpy(items)
    packed, layout = net(x)
    real = x < n_items
    assert layout.index.tolist() == np.flatnonzero(real.numpy().reshape(-1)).tolist()
    reference = _padded_states(net, x)
    torch.testing.assert_close(packed, reference[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(net.last_state(x), reference[:, -1], atol=1e-5, rtol=1e-5)
    weights = torch.randn(packed.shape)
    grads = torch.autograd.grad((packed * weights).sum(), list(net.parameters()))
    expected = torch.autograd.grad((reference[real] * weights).sum(), list(net.parameters()))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    if not training:  # a window's state does not depend on the batch it runs in
        for row, length in enumerate(np.minimum(lengths, 10)):
            alone = net.last_state(x[row : row + 1, 10 - length :])
            torch.testing.assert_close(alone[0], reference[row, -1], atol=1e-5, rtol=1e-5)


def test_sampler_losses_and_weight_average():
    rng = np.random.default_rng(0)
    counts = np.array([0.0, 1.0, 10.0, 100.0])
    sampler = PopularitySampler(counts, n_sample=500, alpha=1.0, rng=rng)
    drawn = torch.cat([sampler.draw() for _ in range(70)]).numpy()
    assert (drawn != 0).all()  # never-seen items are never drawn
    share = np.bincount(drawn, minlength=4) / len(drawn)
    assert share[3] == pytest.approx(100 / 111, abs=0.02)
    # the sampled softmax with every item once as a negative and no correction is the full
    # softmax plus the positive counted twice
    states, vectors = torch.randn(5, 4), torch.randn(6, 4)
    targets = torch.tensor([0, 1, 2, 3, 5])
    full = full_softmax_xe(states, vectors, targets)
    reference = torch.nn.functional.cross_entropy(states @ vectors.T, targets, reduction="none")
    torch.testing.assert_close(full, reference)
    zeros = torch.zeros(6)
    sampled = sampled_softmax_xe_logq(states, vectors[targets], vectors, zeros[targets], zeros)
    logits = states @ vectors.T
    doubled = torch.logaddexp(
        logits.gather(1, targets[:, None]).squeeze(1), torch.logsumexp(logits, 1)
    ) - logits.gather(1, targets[:, None]).squeeze(1)
    torch.testing.assert_close(sampled, doubled)
    param = torch.nn.Parameter(torch.zeros(3))
    average = WeightAverage([param], decay=0.5)
    with torch.no_grad():
        param.fill_(2.0)
    average.step()
    average.apply()
    torch.testing.assert_close(param.detach(), torch.ones(3))


def test_shuffled_batches_cover_every_window_once_in_a_new_random_order():
    rng = np.random.default_rng(0)
    first, second = shuffled_batches(1000, 64, rng), shuffled_batches(1000, 64, rng)
    for epoch in (first, second):
        assert [len(b) for b in epoch] == [64] * 15 + [40]
        assert np.sort(np.concatenate(epoch)).tolist() == list(range(1000))
    # not ordered by anything (as length-bucketed batches were): consecutive windows of a
    # batch are not neighbours, and the next epoch's batches are different ones
    assert np.abs(np.diff(first[0])).mean() > 100
    assert not np.array_equal(first[0], second[0])


def test_items_nobody_repeats_are_not_recommended_again(model, cycle):
    """Nobody in the cycle data has an item twice: the repeat-aware scores put each user's
    own items below every other item, the same way in the top-k path and in ``score``."""
    assert_own_items_ranked_last(model, cycle, N_ITEMS - 12)  # every user has 12 items: the others fill the list


def test_event_types_and_times_tell_which_item_comes_back(tmp_path):
    """Each movie a click and maybe a watch at the same second (movielens-poc's shape): the
    repeat head learns that a movie with only its watch at the newest time gets its click
    next, even behind a newer movie; a solution version keeps the head and the events'
    signals, so batch inference over stored histories ranks as the evaluated batch does."""
    indptr, items, signals = paired_log(np.random.default_rng(1), 300)
    users = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    frame = pd.DataFrame(
        {
            "USER_ID": [f"u{u}" for u in users],
            "ITEM_ID": [f"m{i}" for i in items],
            "TIMESTAMP": signals[:, 1],
            "EVENT_TYPE": np.where(signals[:, 0] == CLICK, "click", "watch"),
        }
    )
    # the last user: movie a watched (click to come), then movie b clicked and watched, same second
    tail = [("z", "m1", 10**8, "click"), ("z", "m1", 10**8, "watch"), ("z", "m2", 2 * 10**8, "watch")]
    tail += [("z", "m3", 2 * 10**8, "click"), ("z", "m3", 2 * 10**8, "watch")]
    frame = pd.concat([frame, pd.DataFrame(tail, columns=frame.columns)])
    (tmp_path / "data").mkdir()
    frame.to_csv(tmp_path / "data" / "interactions.csv", index=False)
    params = {**TINY, "epochs": 2, "repeat_recency": 1.0}
    features = featurize(read_dataset_group(str(tmp_path / "data")))
    trained = train(features, SolutionConfig("aws-user-personalization-v2", params), tmp_path / "solution")
    assert "repeat_head" in trained.recipe.training_stats()
    version = load_solution_version(tmp_path / "solution")
    assert version.recipe.fit_state.repeat_head is not None and version.history_signals is not None
    z = version.user_codes(np.array(["z"], dtype=object))
    stored = version.user_batch(z)
    top, scores = version.recipe.recommend(stored, 3)
    assert version.item_ids[top[0, 0]] == "m2"  # the open pair first, though m3 is newer
    fresh = UserBatch.from_histories(z, *features.sequences(), signals=features.event_signals())
    again, again_scores = version.recipe.recommend(fresh, 3)
    np.testing.assert_array_equal(again, top)
    np.testing.assert_allclose(again_scores, scores, rtol=1e-5)
    unsignalled = version.recipe.recommend(UserBatch.from_histories(z, *features.sequences()), 3)[0]
    assert version.item_ids[unsignalled[0, 0]] == "m3"  # without signals: the recency shares, newest first
