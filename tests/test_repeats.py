"""Repeat-aware scores (recipes/repeats.py): the repeat / explore mixture of a user's items."""

from dataclasses import replace

import numpy as np
import torch

from personalize_pipeline.recipes.fit_state import FitState
from personalize_pipeline.recipes.repeat_head import N_COUNTS, N_GAPS, N_PATTERNS, RepeatHead
from personalize_pipeline.recipes.repeats import (
    P_SEEN_RANGE,
    RECENCY_AUTO,
    RECENCY_DEPTH,
    RECENCY_FALLBACK,
    RECENCY_WEIGHTS,
    RepeatMixture,
    choose_recency_weight,
    history_pairs,
    mix_repeats,
    mix_repeats_with_log_z,
    recency_shares,
    repeat_counts,
    repeat_share,
    row_log_z,
)
from personalize_pipeline.recipes.scoring import normalised_top_k, repeat_mixed_top_k

RECENCY_SHARES = np.array([0.6, 0.2, 0.1, *np.full(RECENCY_DEPTH - 2, 0.1 / (RECENCY_DEPTH - 2))])


def test_repeat_share_counts_transitions_to_an_item_the_user_had():
    # user 0: a b a b (2 repeats in 3 transitions); user 1: c (no transition); user 2: a c (none)
    indptr = np.array([0, 4, 5, 7])
    items = np.array([0, 1, 0, 1, 2, 0, 2])
    assert repeat_share(indptr, repeat_counts(indptr, items)) == (2 + 0.5) / (4 + 1)
    nobody = np.array([0, 3])
    assert repeat_share(nobody, repeat_counts(nobody, np.array([0, 1, 2]))) == 0.5 / 3  # nobody repeats: near 0


def test_mixture_gives_the_users_items_the_repeat_share_and_keeps_each_modes_order():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -torch.inf], [0.0, 0.0, 0.0, 0.0, 0.0]])
    rows, items = np.array([0, 0, 0]), np.array([0, 1, 0])  # user 0 had items 0 and 1 (0 twice)
    mixed = mix_repeats(logits.clone(), rows, items, RepeatMixture(0.1))
    p = torch.softmax(mixed, dim=1)
    assert torch.allclose(p.sum(1), torch.ones(2))
    assert abs(float(p[0, :2].sum()) - 0.1) < 1e-6  # the repeat mode's mass is the share
    assert p[0, 0] > p[0, 1] and p[0, 2] > p[0, 3]  # the model's order within each mode
    assert p[0, 2] > p[0, 0]  # a rare repeat: the best new item now comes first
    assert p[0, 4] == 0.0  # never recommended stays so
    assert torch.equal(mixed[1], logits[1])  # no history: untouched


def test_near_zero_share_puts_the_users_items_last_but_rankable():
    logits = torch.tensor([[5.0, 4.0, 0.0, -1.0]])
    mixed = mix_repeats(logits.clone(), np.array([0, 0]), np.array([0, 1]), RepeatMixture(1e-6))
    order = torch.argsort(mixed[0], descending=True).tolist()
    assert order == [2, 3, 0, 1]
    assert torch.isfinite(mixed).all()


def test_high_share_puts_the_users_items_first():
    logits = torch.tensor([[5.0, 4.0, 0.0, -1.0]])
    mixed = mix_repeats(logits.clone(), np.array([0, 0]), np.array([3, 2]), RepeatMixture(0.9))
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


def test_recency_shares_count_repeats_by_how_recent_the_item_was():
    # user 0: a b b a (b after b: the newest; a after b: the second newest); user 1: c d e c
    # (the third newest); user 2: no repeat
    indptr = np.array([0, 4, 8, 10])
    items = np.array([0, 1, 1, 0, 2, 3, 4, 2, 0, 1])
    counts = np.full(RECENCY_DEPTH + 1, 0.5)
    counts[:3] += 1
    np.testing.assert_allclose(recency_shares(repeat_counts(indptr, items)), counts / counts.sum())


def _recency_reference(indptr: np.ndarray, items: np.ndarray) -> np.ndarray:
    counts = np.zeros(RECENCY_DEPTH + 1)
    for u in range(len(indptr) - 1):
        newest_first: list[int] = []
        for item in items[indptr[u] : indptr[u + 1]]:
            if item in newest_first:
                counts[min(newest_first.index(item), RECENCY_DEPTH)] += 1
                newest_first.remove(item)
            newest_first.insert(0, int(item))
    counts += 0.5
    return counts / counts.sum()


def test_recency_shares_match_a_plain_count_past_the_measured_depth():
    rng = np.random.default_rng(7)
    lengths = rng.integers(0, 80, size=60)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    items = rng.integers(0, 25, size=int(lengths.sum()))  # 25 items: repeats at every depth, and older
    np.testing.assert_allclose(recency_shares(repeat_counts(indptr, items)), _recency_reference(indptr, items))


def test_history_pairs_rank_each_rows_distinct_items_newest_first():
    recency = np.arange(RECENCY_DEPTH + 1, 0, -1).astype(float)
    rows = np.array([0, 0, 0, 0, 2] + [3] * (RECENCY_DEPTH + 2))
    items = np.array([5, 6, 5, 7, 1, *range(RECENCY_DEPTH + 2)])
    pairs = history_pairs(rows, items, recency)
    np.testing.assert_array_equal(pairs.rows[:4], [0, 0, 0, 2])
    np.testing.assert_array_equal(pairs.items[:4], [7, 5, 6, 1])  # 5 counts at its newest event
    np.testing.assert_allclose(pairs.weights[:4], recency[[0, 1, 2, 0]])
    older = pairs.items[4:][pairs.weights[4:] < recency[RECENCY_DEPTH - 1]]  # row 3's two oldest share one entry
    np.testing.assert_array_equal(np.sort(older), [0, 1])
    np.testing.assert_allclose(pairs.weights[4:][-2:], recency[RECENCY_DEPTH] / 2)


MIXTURES = (
    RepeatMixture(1e-5),
    RepeatMixture(0.4, RECENCY_SHARES, 0.75),
    RepeatMixture(0.9, RECENCY_SHARES, 1.0),
    RepeatMixture(0.999, RECENCY_SHARES, 0.3),
)


def test_the_mixed_normaliser_derived_from_the_raw_one_equals_the_summed_one():
    rng = np.random.default_rng(3)
    logits = torch.from_numpy((rng.normal(size=(60, 3000)) * 3).astype(np.float32))
    logits[5, 100:] = -torch.inf  # few items allowed
    rows = np.repeat(np.arange(60), 20)
    items = rng.integers(0, 3000, size=len(rows))
    for mixture in MIXTURES:
        mixed = logits.clone()
        log_z = mix_repeats_with_log_z(mixed, rows, items, mixture)
        assert log_z is not None
        summed = mix_repeats(logits.clone(), rows, items, mixture)
        np.testing.assert_array_equal(mixed.numpy(), summed.numpy())
        expected = torch.logsumexp(summed, dim=1, keepdim=True)
        torch.testing.assert_close(log_z, expected, rtol=0, atol=2e-5)
        derived = normalised_top_k(mixed.clone(), 10, log_z=log_z)
        exact = normalised_top_k(summed.clone(), 10)
        np.testing.assert_array_equal(derived[0], exact[0])
        np.testing.assert_allclose(derived[1], exact[1], rtol=3e-5)
    peaked = logits.clone()
    peaked[0, items[:20]] = 60.0  # p(seen) ~ 1 in row 0: the normaliser is left to a sum
    assert mix_repeats_with_log_z(peaked, rows, items, RepeatMixture(0.5)) is None


def test_recency_brings_back_the_item_just_had_even_where_the_model_cannot_score_it():
    logits = torch.tensor([[4.0, 3.0, 2.0, -torch.inf, 0.0]])
    rows, items = np.array([0, 0, 0]), np.array([1, 2, 3])  # item 3 (newest) was never trained on
    mixture = RepeatMixture(0.8, RECENCY_SHARES, 0.75)
    p = torch.softmax(mix_repeats(logits.clone(), rows, items, mixture), dim=1)[0]
    assert torch.argsort(p, descending=True).tolist()[0] == 3
    assert abs(float(p[1:4].sum()) - 0.8) < 1e-6
    model_only = torch.softmax(mix_repeats(logits.clone(), rows, items, RepeatMixture(0.8)), dim=1)[0]
    assert model_only[3] == 0.0 and abs(float(model_only[1:3].sum()) - 0.8) < 1e-6
    warm_only = RepeatMixture(0.8, RECENCY_SHARES, 0.75, revivable=np.array([True, True, True, False, True]))
    assert torch.softmax(mix_repeats(logits.clone(), rows, items, warm_only), dim=1)[0, 3] == 0.0
    alone = torch.tensor([[1.0, -torch.inf, -torch.inf, -torch.inf, 0.0]])  # nothing of the history scored
    p = torch.softmax(mix_repeats(alone, rows, items, mixture), dim=1)[0]
    np.testing.assert_allclose(p[1:4].numpy(), 0.8 * RECENCY_SHARES[[2, 1, 0]] / RECENCY_SHARES[:3].sum(), rtol=1e-5)


def _reference_mixture(
    logits: torch.Tensor, rows: np.ndarray, items: np.ndarray, mixture: RepeatMixture, signals: np.ndarray | None = None
) -> np.ndarray:
    """The mixture of the module docstring in float64 over whole rows, one row at a time
    (rows without history: the softmax as it is; renormalised where p(seen) is clamped);
    with a head and ``signals``, its weights and share per row."""
    raw = torch.softmax(logits.double(), dim=1).numpy()
    out = raw.copy()
    recency = mixture.recency if mixture.recency is not None else np.ones(RECENCY_DEPTH + 1)
    for row in np.unique(rows):
        newest_first = list(dict.fromkeys(items[rows == row][::-1].tolist()))
        rank = np.minimum(np.arange(len(newest_first)), RECENCY_DEPTH)
        weights = recency[rank] / np.where(rank == RECENCY_DEPTH, max((rank == RECENCY_DEPTH).sum(), 1), 1)
        share = mixture.share
        if mixture.head is not None and signals is not None:
            at = rows == row
            _, head_items, weights, shares = mixture.head.weights(rows[at], items[at], signals[at])
            assert head_items.tolist() == newest_first
            share = shares[0]
        seen = np.array(newest_first)
        kept = np.isfinite(logits[row, seen].numpy()) | (mixture.weight > 0)
        if not kept.any():
            continue
        seen, weights = seen[kept], weights[kept]
        p_true = raw[row, seen].sum()
        p_seen = np.clip(p_true, *P_SEEN_RANGE)
        lam = mixture.weight if p_true > 0 else 1.0
        out[row] = (1 - share) * raw[row] / (1 - p_seen)
        out[row, seen] = share * (lam * weights / weights.sum() + (1 - lam) * raw[row, seen] / p_seen)
    return out / out.sum(1, keepdims=True)


def test_mixed_top_k_from_one_pass_ranks_and_scores_like_the_mixture_over_whole_rows():
    rng = np.random.default_rng(5)
    for trial, mixture in enumerate(MIXTURES):
        n, m, k = 40, 2500, 25
        logits = torch.from_numpy((rng.normal(size=(n, m)) * (2 + 2 * trial)).astype(np.float32))
        logits[:, rng.integers(0, m, size=300)] = -torch.inf  # never trained on
        logits[1, 30:] = -torch.inf  # fewer allowed items than k
        logits[2] = torch.round(logits[2])  # ties: the lower code first
        lengths = rng.integers(0, 120, size=n)
        lengths[3] = 0  # no history
        rows = np.repeat(np.arange(n), lengths)
        items = rng.integers(0, m, size=len(rows))
        items[rows == 4] = torch.argsort(logits[4], descending=True)[: int(lengths[4])].numpy()  # p(seen) ~ 1
        items[rows == 5] = items[rows == 5] % 40  # repeated items
        columns = np.arange(0, m, 7)
        got_items, got_scores, log_z, picked = repeat_mixed_top_k(logits.clone(), k, rows, items, mixture, columns)
        mixed = _reference_mixture(logits, rows, items, mixture)
        for row in range(n):
            allowed = np.flatnonzero(mixed[row] > 0)
            best = allowed[np.lexsort((allowed, -mixed[row, allowed]))][:k]
            got = got_items[row, : len(best)]
            if mixture.weight == 0.0:
                np.testing.assert_array_equal(got, best)
            else:  # older items share one recency entry: near ties, ordered at float32's resolution
                assert len(set(got.tolist())) == len(best)
                np.testing.assert_allclose(mixed[row, got], mixed[row, best], rtol=1e-5)
            assert (got_items[row, len(best) :] == -1).all() and (got_scores[row, len(best) :] == 0).all()
            np.testing.assert_allclose(got_scores[row, : len(best)], mixed[row, got], rtol=1e-4, atol=1e-9)
        assert picked is not None
        np.testing.assert_allclose(np.exp(picked - log_z), mixed[:, columns], rtol=1e-4, atol=1e-9)


def test_the_recency_weight_is_the_one_that_ranks_held_out_events_best():
    mixture = RepeatMixture(0.4, RECENCY_SHARES, RECENCY_FALLBACK)
    seen: list[float | None] = []

    def scored_by(table):
        def score_each(mixtures):
            seen.extend(None if m is None else m.recency_weight for m in mixtures)
            return [table[None if m is None else m.recency_weight] for m in mixtures]

        return score_each

    table = {0.0: 0.30, 0.25: 0.32, 0.5: 0.35, 0.75: 0.35, 1.0: 0.31, None: 0.35}
    weight, scores = choose_recency_weight(mixture, scored_by(table))
    assert seen == [*RECENCY_WEIGHTS, None] and weight == 0.5  # the lowest of equal scores; mixed before unmixed
    assert scores == [0.30, 0.32, 0.35, 0.35, 0.31, 0.35]
    weight, _ = choose_recency_weight(mixture, scored_by({**table, None: 0.36}))
    assert weight is None  # the held-out events rank best unmixed


def _best_at(best):
    """A ``score_each`` whose best mixture has the recency weight ``best`` (None: unmixed)."""
    return lambda mixtures: [1.0 if (None if m is None else m.recency_weight) == best else 0.0 for m in mixtures]


def test_fit_state_chooses_the_weight_only_when_auto_and_saves_it():
    state = FitState(popularity=np.ones(5), trained=np.ones(5, dtype=bool))
    state.measure_repeats(np.array([0, 4]), np.array([0, 1, 1, 0]))
    params = {"repeat_aware": True, "repeat_recency": RECENCY_AUTO}
    assert state.repeat_mixture(params).recency_weight == RECENCY_FALLBACK  # nothing chosen yet
    report = state.choose_recency_weight(params, None, _best_at(1.0))
    assert report["repeat_recency_chosen"] == 1.0 and state.repeat_mixture(params).recency_weight == 1.0
    assert report["held_out_ndcg10_by_repeat_recency"] == {
        "0.0": 0,
        "0.25": 0,
        "0.5": 0,
        "0.75": 0,
        "1.0": 1,
        "unmixed": 0,
    }
    again = FitState.read(state.arrays())
    assert again.repeat_recency_weight == 1.0 and np.allclose(again.repeat_recency, state.repeat_recency)
    fixed = {"repeat_aware": True, "repeat_recency": 0.3}
    assert state.choose_recency_weight(fixed, None, _best_at(None)) == {}
    assert state.repeat_mixture(fixed).recency_weight == 0.3
    assert state.repeat_mixture({"repeat_aware": False, "repeat_recency": 0.3}) is None


def test_fit_state_turns_mixing_off_where_held_out_events_rank_better_unmixed():
    state = FitState(popularity=np.ones(5), trained=np.ones(5, dtype=bool))
    state.measure_repeats(np.array([0, 4]), np.array([0, 1, 1, 0]))
    auto = {"repeat_aware": True, "repeat_recency": RECENCY_AUTO}
    assert state.choose_recency_weight(auto, None, _best_at(None))["repeat_recency_chosen"] == "unmixed"
    assert state.repeat_mixture(auto) is None
    assert FitState.read(state.arrays()).repeat_mixture(auto) is None  # saved with the version
    assert state.repeat_mixture({"repeat_aware": True, "repeat_recency": 0.5}).recency_weight == 0.5  # set: mixes
    state.reset_repeat_choice()
    assert state.repeat_mixture(auto).recency_weight == RECENCY_FALLBACK


def _head_mixtures(rng: np.random.Generator) -> list[RepeatMixture]:
    head = RepeatHead(
        rng.normal(size=RECENCY_DEPTH + 1),
        rng.normal(size=N_PATTERNS * N_GAPS) * 2,
        rng.normal(size=N_COUNTS),
        np.array([0, 1, 2]),
    )
    return [RepeatMixture(0.3, RECENCY_SHARES, weight, head=head) for weight in (0.0, 0.75, 1.0)]


def test_a_heads_shares_and_weights_mix_alike_in_the_torch_path_and_the_one_pass_top_k():
    rng = np.random.default_rng(11)
    n, m, k = 30, 1500, 20
    logits = torch.from_numpy((rng.normal(size=(n, m)) * 3).astype(np.float32))
    lengths = rng.integers(0, 60, size=n)
    rows = np.repeat(np.arange(n), lengths)
    items = rng.integers(0, 80, size=len(rows))  # repeated items
    signals = np.stack([rng.integers(-1, 4, size=len(rows)), np.cumsum(rng.choice([0, 0, 50, 4000], len(rows)))], 1)
    for mixture in _head_mixtures(rng):
        mixed = _reference_mixture(logits, rows, items, mixture, signals)
        flat = _reference_mixture(logits, rows, items, replace(mixture, head=None))
        assert not np.allclose(mixed, flat)  # the head changes the mixture
        got = torch.softmax(mix_repeats(logits.clone(), rows, items, mixture, signals).double(), dim=1).numpy()
        np.testing.assert_allclose(got, mixed, rtol=2e-4, atol=1e-10)
        top_items, top_scores, _, _ = repeat_mixed_top_k(logits.clone(), k, rows, items, mixture, None, signals)
        for row in range(n):
            np.testing.assert_allclose(top_scores[row], mixed[row, top_items[row]], rtol=1e-4, atol=1e-9)
            np.testing.assert_allclose(top_scores[row], np.sort(mixed[row])[::-1][:k], rtol=1e-4, atol=1e-9)
        without = repeat_mixed_top_k(logits.clone(), k, rows, items, mixture)  # no signals: the shares
        np.testing.assert_allclose(without[1][0], np.sort(flat[0])[::-1][:k], rtol=1e-4, atol=1e-9)
