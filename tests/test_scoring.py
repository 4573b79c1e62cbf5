"""The exact top-k of the scorer (recipes/scoring.py) against torch.topk and a sort."""

import numpy as np
import pytest
import torch

from personalize_pipeline.recipes.scoring import GROUP, exact_top_k, normalised_top_k, threshold_top_k


def reference_top_k(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best first, equal values by lower code: a stable sort of every row."""
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(values, order, 1), order


def random_logits(rng: np.random.Generator, n: int, m: int, ties: bool, excluded: float) -> np.ndarray:
    logits = rng.normal(size=(n, m)).astype(np.float32)
    if ties:  # few distinct values: ties everywhere, at the k-th place too
        logits = np.round(logits * 2) / 2
    logits[rng.random((n, m)) < excluded] = -np.inf
    return logits


@pytest.mark.parametrize("seed", range(6))
def test_threshold_top_k_is_the_exact_top_k(seed):
    rng = np.random.default_rng(seed)
    for m in (GROUP * 60, GROUP * 60 + 37, 333):
        for ties in (False, True):
            for excluded in (0.0, 0.5, 0.999):
                logits = random_logits(rng, 40, m, ties, excluded)
                logits[0] = -np.inf  # nothing allowed
                logits[1, : m - 3] = -np.inf  # fewer allowed items than k
                k = int(rng.integers(1, 30))
                expected_values, expected_codes = reference_top_k(logits, k)
                for top in (threshold_top_k, exact_top_k):
                    values, codes = top(torch.from_numpy(logits), k)
                    np.testing.assert_array_equal(values.numpy(), expected_values)
                    finite = np.isfinite(expected_values)  # excluded items are dropped later
                    np.testing.assert_array_equal(codes.numpy()[finite], expected_codes[finite])


def test_threshold_top_k_agrees_with_torch_topk_without_ties():
    logits = torch.randn(300, GROUP * 100 + 1, generator=torch.Generator().manual_seed(3))
    values, codes = threshold_top_k(logits, 25)
    expected = torch.topk(logits, 25, dim=1, sorted=True)
    assert torch.equal(values, expected.values) and torch.equal(codes, expected.indices)


def test_normalised_top_k_marks_excluded_items_and_keeps_scores():
    rng = np.random.default_rng(7)
    logits = random_logits(rng, 50, GROUP * 50, ties=False, excluded=0.3)
    logits[4, 25:] = -np.inf  # 25 items allowed for a top 30
    items, scores = normalised_top_k(torch.from_numpy(logits.copy()), 30)
    expected = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    _, codes = reference_top_k(logits, 30)
    excluded = ~np.isfinite(np.take_along_axis(logits, codes, 1))
    assert excluded.sum() and (items[excluded] == -1).all() and (scores[excluded] == 0).all()
    np.testing.assert_array_equal(items[~excluded], codes[~excluded])
    np.testing.assert_allclose(scores[~excluded], np.take_along_axis(expected, codes, 1)[~excluded], rtol=1e-5)
