"""The exact top-k of the scorer (recipes/scoring.py) against torch.topk and a sort."""

import numpy as np
import pytest
import torch

from personalize_pipeline.errors import InputError
from personalize_pipeline.recipes.scoring import (
    BF16_SCORE_RTOL,
    GROUP,
    LinearScorer,
    bf16_available,
    exact_top_k,
    log_sum_exp,
    normalised_top_k,
    resolve_precision,
    scoring_precision,
    threshold_top_k,
    top_k_candidates,
)


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
                logits[2] *= np.float32(1e37)  # the floor's halvings near float32's range
                logits[3, 1:] = logits[3, 0]  # every group's maximum equal
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


def test_log_sum_exp_matches_float64_and_leaves_the_logits_alone():
    rng = np.random.default_rng(13)
    for m in (GROUP * 100, 513, 7):  # whole and partial compiled chunks of 512
        logits = (rng.normal(size=(30, m)) * 6).astype(np.float32)
        logits[0] = -np.inf  # nothing allowed: -inf
        logits[1, 1:] = -np.inf  # one item: its logit
        logits[2, : m // 2] -= 200.0  # half the row far below: adds nothing, as float32's exp
        logits[3, ::3] = -np.inf
        before = logits.copy()
        row_max = logits.max(1, keepdims=True)
        got = log_sum_exp(torch.from_numpy(logits), torch.from_numpy(np.where(np.isfinite(row_max), row_max, 0)))
        expected = torch.logsumexp(torch.from_numpy(logits).double(), dim=1, keepdim=True)
        np.testing.assert_array_equal(logits, before)
        assert torch.isneginf(got[0]).all() and float(got[1]) == pytest.approx(float(logits[1, 0]), abs=1e-6)
        torch.testing.assert_close(got[1:], expected[1:], rtol=1e-7, atol=1e-7)
        # any shift above the max (float32 logits - a shift near 64 are off by up to 2**-18)
        shifted = log_sum_exp(torch.from_numpy(logits), torch.from_numpy(row_max + 40.0))
        torch.testing.assert_close(shifted[1:], expected[1:], rtol=0, atol=1e-5)


needs_bf16 = pytest.mark.skipif(not bf16_available(), reason="this CPU has no native bf16")


def test_top_k_candidates_with_a_margin_hold_the_top_k_of_every_perturbation():
    rng = np.random.default_rng(11)
    logits = random_logits(rng, 60, GROUP * 40, ties=False, excluded=0.2)
    margin = np.full((60, 1), 0.2, dtype=np.float32)
    noisy = logits + rng.uniform(-0.1, 0.1, logits.shape).astype(np.float32)  # each off by <= margin / 2
    rows, codes, values = top_k_candidates(torch.from_numpy(noisy), 25, margin)
    np.testing.assert_array_equal(values, noisy[rows, codes])
    assert np.isfinite(values).all()
    _, expected = reference_top_k(logits, 25)
    found = set(zip(rows.tolist(), codes.tolist(), strict=True))
    assert all((r, c) in found for r in range(60) for c in expected[r] if np.isfinite(logits[r, c]))


@needs_bf16
def test_bf16_scoring_gives_float32_items_and_close_scores():
    torch.manual_seed(5)
    m, d, n = GROUP * 30, 32, 300
    items, bias = torch.randn(m, d) * 0.4, torch.randn(m)
    bias[::50] = -torch.inf  # never recommended
    scorer = LinearScorer.build(items, bias, torch.randn(m) + bias)
    vectors = torch.tanh(torch.randn(n, d) * 2)
    rows = np.flatnonzero(np.arange(n) % 7 != 0)  # the others have no vector: the fallback
    rng = np.random.default_rng(5)
    allowed = rng.random((n, m)) > 0.3
    allowed[3] = False  # nothing allowed
    seen = (np.repeat(np.arange(n), 3), rng.integers(0, m, 3 * n))
    expected_items, expected_scores = scorer.top_k(n, rows, vectors[rows], 25, allowed, seen)
    with scoring_precision("bf16"):
        got_items, got_scores = scorer.top_k(n, rows, vectors[rows], 25, allowed, seen)
    np.testing.assert_array_equal(got_items, expected_items)
    assert (got_items[3] == -1).all() and (got_scores[3] == 0).all()
    assert not np.isin(got_items, np.arange(0, m, 50)).any()
    np.testing.assert_allclose(got_scores, expected_scores, rtol=BF16_SCORE_RTOL, atol=1e-7)
    fallback_rows = np.arange(0, n, 7)
    np.testing.assert_allclose(got_scores[fallback_rows], expected_scores[fallback_rows], rtol=1e-5)


def test_scoring_precision_setting():
    assert resolve_precision(None) == "float32" and resolve_precision(" Float32 ") == "float32"
    with pytest.raises(InputError, match="scoring_precision"):
        resolve_precision("fp16")
    if bf16_available():
        assert resolve_precision("bf16") == "bf16"
    else:
        with pytest.raises(InputError, match="native bf16"):
            resolve_precision("bf16")
