"""Repeat-aware scores (recipes/repeats.py): the repeat / explore mixture of a user's items."""

import numpy as np
import torch

from personalize_pipeline.recipes.repeats import (
    P_SEEN_RANGE,
    mix_repeats,
    mix_repeats_with_log_z,
    repeat_share,
    row_log_z,
)
from personalize_pipeline.recipes.scoring import normalised_top_k, repeat_mixed_top_k


def test_repeat_share_counts_transitions_to_an_item_the_user_had():
    # user 0: a b a b (2 repeats in 3 transitions); user 1: c (no transition); user 2: a c (none)
    indptr = np.array([0, 4, 5, 7])
    items = np.array([0, 1, 0, 1, 2, 0, 2])
    assert repeat_share(indptr, items, 3) == (2 + 0.5) / (4 + 1)
    assert repeat_share(np.array([0, 3]), np.array([0, 1, 2]), 3) == 0.5 / 3  # nobody repeats: near 0


def test_mixture_gives_the_users_items_the_repeat_share_and_keeps_each_modes_order():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -torch.inf], [0.0, 0.0, 0.0, 0.0, 0.0]])
    rows, items = np.array([0, 0, 0]), np.array([0, 1, 0])  # user 0 had items 0 and 1 (0 twice)
    mixed = mix_repeats(logits.clone(), rows, items, 0.1)
    p = torch.softmax(mixed, dim=1)
    assert torch.allclose(p.sum(1), torch.ones(2))
    assert abs(float(p[0, :2].sum()) - 0.1) < 1e-6  # the repeat mode's mass is the share
    assert p[0, 0] > p[0, 1] and p[0, 2] > p[0, 3]  # the model's order within each mode
    assert p[0, 2] > p[0, 0]  # a rare repeat: the best new item now comes first
    assert p[0, 4] == 0.0  # never recommended stays so
    assert torch.equal(mixed[1], logits[1])  # no history: untouched


def test_near_zero_share_puts_the_users_items_last_but_rankable():
    logits = torch.tensor([[5.0, 4.0, 0.0, -1.0]])
    mixed = mix_repeats(logits.clone(), np.array([0, 0]), np.array([0, 1]), 1e-6)
    order = torch.argsort(mixed[0], descending=True).tolist()
    assert order == [2, 3, 0, 1]
    assert torch.isfinite(mixed).all()


def test_high_share_puts_the_users_items_first():
    logits = torch.tensor([[5.0, 4.0, 0.0, -1.0]])
    mixed = mix_repeats(logits.clone(), np.array([0, 0]), np.array([3, 2]), 0.9)
    assert torch.argsort(mixed[0], descending=True).tolist() == [2, 3, 0, 1]


def test_row_log_z_is_torch_logsumexp():
    logits = torch.randn(30, 4113, generator=torch.Generator().manual_seed(1)) * 8
    logits[3] = -torch.inf  # a row with nothing allowed
    logits[4, 5:] = -torch.inf
    before = logits.clone()
    row_log_z(torch.zeros(40, 5000))  # a larger scratch left from an earlier call
    got, expected = row_log_z(logits), torch.logsumexp(logits, dim=1)
    assert torch.equal(logits, before) and torch.isneginf(got[3])
    torch.testing.assert_close(got[torch.isfinite(expected)], expected[torch.isfinite(expected)], rtol=1e-6, atol=1e-5)


def test_the_mixed_normaliser_derived_from_the_raw_one_equals_the_summed_one():
    rng = np.random.default_rng(3)
    logits = torch.from_numpy((rng.normal(size=(60, 3000)) * 3).astype(np.float32))
    logits[5, 100:] = -torch.inf  # few items allowed
    rows = np.repeat(np.arange(60), 20)
    items = rng.integers(0, 3000, size=len(rows))
    for share in (1e-5, 0.4, 0.9):
        mixed = logits.clone()
        log_z = mix_repeats_with_log_z(mixed, rows, items, share)
        assert log_z is not None
        summed = mix_repeats(logits.clone(), rows, items, share)
        np.testing.assert_array_equal(mixed.numpy(), summed.numpy())
        expected = torch.logsumexp(summed, dim=1, keepdim=True)
        torch.testing.assert_close(log_z, expected, rtol=0, atol=2e-5)
        derived = normalised_top_k(mixed.clone(), 10, log_z=log_z)
        exact = normalised_top_k(summed.clone(), 10)
        np.testing.assert_array_equal(derived[0], exact[0])
        np.testing.assert_allclose(derived[1], exact[1], rtol=3e-5)
    peaked = logits.clone()
    peaked[0, items[:20]] = 60.0  # p(seen) ~ 1 in row 0: the normaliser is left to a sum
    assert mix_repeats_with_log_z(peaked, rows, items, 0.5) is None


def _reference_mixture(logits: torch.Tensor, rows: np.ndarray, items: np.ndarray, share: float) -> np.ndarray:
    """The mixture of the module docstring in float64 over whole rows (rows without history:
    the softmax as it is; renormalised where p(seen) is clamped)."""
    raw = torch.softmax(logits.double(), dim=1)
    seen = torch.zeros(logits.shape, dtype=torch.bool)
    seen[rows, items] = True
    p_seen = (raw * seen).sum(1, keepdim=True).clamp(*P_SEEN_RANGE)
    mixed = torch.where(seen, share * raw / p_seen, (1 - share) * raw / (1 - p_seen))
    mixed = torch.where(seen.any(1, keepdim=True), mixed, raw)
    return (mixed / mixed.sum(1, keepdim=True)).numpy()


def test_mixed_top_k_from_one_pass_ranks_and_scores_like_the_mixture_over_whole_rows():
    rng = np.random.default_rng(5)
    for trial, share in enumerate((1e-5, 0.3, 0.9, 0.999)):
        n, m, k = 40, 2500, 25
        logits = torch.from_numpy((rng.normal(size=(n, m)) * (2 + 2 * trial)).astype(np.float32))
        logits[:, rng.integers(0, m, size=300)] = -torch.inf  # never recommended
        logits[1, 30:] = -torch.inf  # fewer allowed items than k
        logits[2] = torch.round(logits[2])  # ties: the lower code first
        lengths = rng.integers(0, 120, size=n)
        lengths[3] = 0  # no history
        rows = np.repeat(np.arange(n), lengths)
        items = rng.integers(0, m, size=len(rows))
        items[rows == 4] = torch.argsort(logits[4], descending=True)[: int(lengths[4])].numpy()  # p(seen) ~ 1
        columns = np.arange(0, m, 7)
        got_items, got_scores, log_z, picked = repeat_mixed_top_k(logits.clone(), k, rows, items, share, columns)
        mixed = _reference_mixture(logits, rows, items, share)
        for row in range(n):
            allowed = np.flatnonzero(mixed[row] > 0)
            best = allowed[np.lexsort((allowed, -mixed[row, allowed]))][:k]
            np.testing.assert_array_equal(got_items[row, : len(best)], best)
            assert (got_items[row, len(best) :] == -1).all() and (got_scores[row, len(best) :] == 0).all()
            np.testing.assert_allclose(got_scores[row, : len(best)], mixed[row, best], rtol=1e-4, atol=1e-9)
        assert picked is not None
        np.testing.assert_allclose(np.exp(picked - log_z), mixed[:, columns], rtol=1e-4, atol=1e-9)
