"""Early stopping on held-out newest events (recipes/early_stopping.py) and the averaged
weights it scores (WeightAverage.swapped_in)."""

import numpy as np
import pytest
import torch

from personalize_pipeline.recipes.averaging import WeightAverage
from personalize_pipeline.recipes.early_stopping import SMALL_DATA_USERS, EarlyStopping, HeldOutNewest, held_out_count
from personalize_pipeline.recipes.gru_held_out import HeldOutWindows
from personalize_pipeline.recipes.hrnn import GRUWindows, make_windows
from personalize_pipeline.recipes.repeats import RepeatMixture
from personalize_pipeline.recipes.sasrec import end_aligned_windows

PAD = 50


def histories(n_users=1000, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 13, n_users)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    items = rng.integers(0, PAD, indptr[-1])
    return indptr, items


def windows(indptr, items, length=5):
    inputs, targets, positions = end_aligned_windows(indptr, items, length, PAD)
    newest = np.isin(positions[:, -1] + 1, indptr[1:])
    return inputs, targets, positions, newest


@pytest.mark.parametrize("steps", [1, 2])
def test_held_out_events_are_the_newest_of_sampled_users_and_leave_training(steps):
    """The newest event of a sample of users is held out; with ``steps`` 2 the one before it
    is not trained on either (as the leave-last-out protocol's validation event before its
    test event). 1 is the default."""
    indptr, items = histories(n_users=3000)  # more than SMALL_DATA_USERS: the share decides
    inputs, targets, positions, newest = windows(indptr, items)
    default = {} if steps == 1 else {"steps": steps}  # 1 is take's default
    held, train_in, train_out = HeldOutNewest.take(
        inputs, targets, newest, PAD, share=0.5, cap=10_000, rng=np.random.default_rng(1), **default
    )
    assert held is not None
    eligible = newest & ((targets >= 0).sum(axis=1) >= steps + 1)
    assert len(held.targets) == round(0.5 * eligible.sum())
    changed = np.flatnonzero((train_out != targets).any(axis=1))
    assert len(changed) == len(held.targets) and eligible[changed].all()
    # each held-out target is its user's newest event, no longer a training target
    last_event = items[positions[changed, -1]]
    assert np.array_equal(held.targets, last_event)
    assert (train_out >= 0).sum() == (targets >= 0).sum() - steps * len(changed)
    # the shifted windows end at the target before the ones left out, with its inputs; with
    # 2 steps the event before the held-out one is in no training window, as input or target
    assert np.array_equal(train_out[changed, -1], targets[changed, -1 - steps])
    assert np.array_equal(train_in[changed, -1], inputs[changed, -1 - steps])
    assert (train_out[changed, :steps] == -1).all() and (train_in[changed, :steps] == PAD).all()
    assert np.array_equal(train_in[changed, steps:], inputs[changed, :-steps])
    assert np.array_equal(train_out[changed, steps:], targets[changed, :-steps])
    # the held-out window is the state's input: everything before the held-out event
    assert np.array_equal(held.windows, inputs[changed])
    # without sequences no history; with them each user's events before the held-out one
    assert held.history is None
    # (and their events' signals where given)
    signals = np.stack([items % 3, np.arange(len(items))], axis=1)
    sequences = (indptr, items, positions[:, -1])
    rng = np.random.default_rng(1)
    again, _, _ = HeldOutNewest.take(inputs, targets, newest, PAD, 0.5, 10_000, rng, steps, sequences, signals)
    assert again is not None and again.history is not None
    rows, had, had_signals = again.history
    users = np.searchsorted(indptr, positions[changed, -1], side="right") - 1
    for row in (0, 1, len(changed) - 1):
        expected = slice(indptr[users[row]], positions[changed[row], -1])
        assert np.array_equal(had[rows == row], items[expected])
        assert np.array_equal(had_signals[rows == row], signals[expected])
    # other windows are untouched
    others = np.setdiff1d(np.arange(len(targets)), changed)
    assert np.array_equal(train_out[others], targets[others]) and np.array_equal(train_in[others], inputs[others])


def test_small_data_holds_out_every_eligible_user_and_the_cap_bounds_large_data():
    assert held_out_count(943, 0.1, 5000) == 943  # ML-100k: a tenth would be too few to stop on
    assert held_out_count(3000, 0.1, 5000) == SMALL_DATA_USERS
    assert held_out_count(22_000, 0.1, 5000) == 2200  # the share where it gives enough
    assert held_out_count(200_000, 0.1, 5000) == 5000
    assert held_out_count(150, 0.5, 5000) == 0  # fewer than MIN_HELD_OUT_USERS: no early stopping


def test_too_few_users_hold_out_nothing():
    indptr, items = histories(n_users=100)
    inputs, targets, _, newest = windows(indptr, items)
    held, train_in, train_out = HeldOutNewest.take(inputs, targets, newest, PAD, 0.5, 10_000, np.random.default_rng(1))
    assert held is None and train_in is inputs and train_out is targets


def test_ndcg_at_10_ranks_over_the_catalogue():
    n_items = 20
    item_vectors = torch.eye(n_items)  # the logit of item j is the state's j-th entry
    targets = np.array([3, 7, 11])
    state_of_last_item = {
        1: torch.eye(n_items)[3],  # target first: gain 1
        2: torch.eye(n_items)[7] + 2 * torch.eye(n_items)[0] + 2 * torch.eye(n_items)[1],  # third: 1/log2(4)
        3: -torch.eye(n_items)[11],  # target last of 20: gain 0
    }
    window = np.full((3, 4), n_items)
    window[:, -1] = [1, 2, 3]
    window[1, -2] = 5  # a longer history
    held = HeldOutNewest(windows=window, targets=targets)

    def encode(w):
        return torch.stack([state_of_last_item[int(last)] for last in w[:, -1]])

    expected = (1.0 + 1.0 / np.log2(4) + 0.0) / 3
    assert abs(held.ndcg_at_10(encode, item_vectors) - expected) < 1e-6


def test_ndcg_at_10_scores_what_the_recipe_serves_with_repeat_mixing():
    """With a repeat share near 0 the window's own items fall below the rest, as when the
    recipe recommends (recipes/repeats.py): a held-out item behind two of them moves up."""
    n_items = 20
    state = torch.zeros(n_items)
    state[0], state[1], state[7] = 3.0, 2.0, 1.0  # items 0 and 1 (in the window) before 7
    window = np.array([[n_items, 0, 1, 4]])
    held = HeldOutNewest(windows=window, targets=np.array([7]))
    items = torch.eye(n_items)
    assert abs(held.ndcg_at_10(lambda w: state[None], items) - 1 / np.log2(4)) < 1e-6
    assert abs(held.ndcg_at_10(lambda w: state[None], items, repeats=RepeatMixture(1e-6)) - 1.0) < 1e-6
    # the user's whole history, where known: item 0 only (item 1 is a new item for them)
    known = HeldOutNewest(windows=window, targets=np.array([7]), history=(np.array([0]), np.array([0]), None))
    assert abs(known.ndcg_at_10(lambda w: state[None], items, repeats=RepeatMixture(1e-6)) - 1 / np.log2(3)) < 1e-6


def test_early_stopping_keeps_the_best_state_and_stops_after_patience():
    stopping = EarlyStopping(patience=2)
    weights = {"w": torch.zeros(2)}
    scores = [0.1, 0.3, 0.2, 0.25, 0.4]
    stopped_at = None
    for epoch, score in enumerate(scores, start=1):
        weights["w"] = torch.full((2,), float(epoch))
        if stopping.observe(epoch, score, lambda: weights):
            stopped_at = epoch
            break
    assert stopped_at == 4
    assert stopping.best_epoch == 2 and stopping.best_state is not None
    assert torch.equal(stopping.best_state["w"], torch.full((2,), 2.0))
    assert stopping.scores == [0.1, 0.3, 0.2, 0.25]


def test_patience_zero_never_stops():
    stopping = EarlyStopping(patience=0)
    assert not any(stopping.observe(e, 1.0 / e, dict) for e in range(1, 20))


def test_averaged_weights_swap_in_and_back():
    param = torch.nn.Parameter(torch.zeros(3))
    average = WeightAverage([param], decay=0.5)
    with torch.no_grad():
        param.fill_(4.0)
    average.step()  # average = 0.5 * 0 + 0.5 * 4
    with average.swapped_in():
        assert torch.equal(param.detach(), torch.full((3,), 2.0))
    assert torch.equal(param.detach(), torch.full((3,), 4.0))


def gru_windows(indptr, items, bptt=4):
    inputs, targets, first = make_windows(indptr, items, bptt)
    users = np.searchsorted(indptr, first - 1, side="right") - 1
    return GRUWindows(
        torch.from_numpy(inputs),
        torch.from_numpy(targets),
        torch.from_numpy((targets >= 0).astype(np.float32)),
        torch.from_numpy(users),
        torch.from_numpy(first),
        None,
    )


def test_gru_held_out_events_are_the_newest_of_sampled_users_and_leave_training():
    indptr, items = histories()
    windows = gru_windows(indptr, items)
    targets_before, weights_before = windows.targets.clone(), windows.weights.clone()
    held = HeldOutWindows.take(windows, share=0.5, cap=10_000, rng=np.random.default_rng(1))
    assert held is not None
    changed = np.flatnonzero((windows.targets != targets_before).any(dim=1).numpy())
    assert len(changed) == len(held)
    users = windows.users.numpy()[changed]
    # each held-out item is its user's newest event, in the user's newest window
    assert np.array_equal(held.held.targets, items[indptr[users + 1] - 1])
    assert len(np.unique(users)) == len(users)
    # it is no longer a training target (target -1, weight 0); everything else is kept
    assert windows.n_events == int((targets_before >= 0).sum()) - len(held)
    assert float(windows.weights.sum()) == float(weights_before.sum()) - len(held)
    # with the sequences: each user's whole history before the held-out event
    with_history = gru_windows(indptr, items)
    again = HeldOutWindows.take(with_history, 0.5, 10_000, np.random.default_rng(1), (indptr, items))
    assert again is not None and again.held.history is not None
    rows, had, signals = again.held.history
    assert signals is None  # (the GRU recipes read no event types)
    for row, user in enumerate(again.users.numpy()):
        assert np.array_equal(had[rows == row], items[indptr[user] : indptr[user + 1] - 1])
    # the GRU reads the window up to the held-out event: the items just before it
    lengths = held.lengths.numpy()
    assert (lengths >= 2).all()
    last_inputs = held.held.windows[np.arange(len(held)), lengths - 1]
    assert np.array_equal(last_inputs, items[indptr[users + 1] - 2])
    # too few users: nothing held out, the windows untouched
    small = gru_windows(*histories(n_users=100))
    before = small.targets.clone()
    assert HeldOutWindows.take(small, 0.5, 10_000, np.random.default_rng(1)) is None
    assert torch.equal(small.targets, before)
