"""Offline metrics with Amazon Personalize's names, under two protocols.

``personalize`` — as the service does: 10% of the users (those with 2+ events, chosen with
the seed) are held out; the model trains on the other 90%. Each test user's oldest 90% of
events are the input and the newest 10% (at least one; ``round(0.1 n)`` rounded half up)
the truth. Reports ``coverage``, ``mean_reciprocal_rank_at_25``,
``normalized_discounted_cumulative_gain_at_{5,10,25}`` and ``precision_at_{5,10,25}``.

``leave-last-out`` — as in sequential-recommendation research (RecBole's ordering split):
per user, time-ordered with ties in file order, the last event is the test item and the one
before it the validation item (users with 2 events have a test item only; users with 1
event only train). The model trains on the rest; the test input is everything before the
test item. Ranking is over all items; seen items are excluded only with ``exclude_seen``.
Reports ``hit_rate_at_K``, ``normalized_discounted_cumulative_gain_at_K``,
``mean_reciprocal_rank_at_K`` for K in 5, 10, 25 and ``coverage``.

Definitions (per test user, averaged over test users): precision@K = relevant items in the
top K / K; NDCG@K = DCG@K / ideal DCG@K with gains 1/log2(rank + 1), the ideal having
min(K, |truth|) hits; MRR@K = 1 / rank of the first relevant item in the top K (0 if none);
hit rate@K = 1 if the item is in the top K. Coverage = distinct items recommended (top 25)
to the test users / items in the catalogue (interactions and Items dataset).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError
from .features import Features
from .recipes import Recipe, UserBatch
from .recipes.base import segment_index

KS = (5, 10, 25)
PROTOCOLS = ("personalize", "leave-last-out")
MAX_K = 25
SCORING_CHUNK = 2048


@dataclass
class EvalSplit:
    protocol: str
    train: Features
    test_users: np.ndarray
    input_indptr: np.ndarray
    input_items: np.ndarray
    truth_indptr: np.ndarray
    truth_items: np.ndarray
    input_context: np.ndarray | None = None

    def batch(self, rows: slice) -> UserBatch:
        ptr = self.input_indptr[rows.start : rows.stop + 1]
        items = self.input_items[ptr[0] : ptr[-1]]
        ctx = self.input_context[ptr[0] : ptr[-1]] if self.input_context is not None else None
        return UserBatch(self.test_users[rows], ptr - ptr[0], items, ctx)


def _user_bounds(features: Features) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    indptr, items = features.sequences()
    lengths = np.diff(indptr)
    return indptr, items, lengths


def _segments(starts: np.ndarray, lengths: np.ndarray, values: np.ndarray, context: np.ndarray | None = None):
    """CSR of values[starts[i] : starts[i] + lengths[i]] for each i (and the same rows of
    ``context`` when given)."""
    ptr, idx = segment_index(starts, lengths)
    if context is None:
        return ptr, values[idx]
    return ptr, values[idx], context[idx]


def _event_mask(indptr: np.ndarray, n_events: int, keep_first: np.ndarray) -> np.ndarray:
    """Boolean mask over the sorted events: the first keep_first[u] events of each user."""
    lengths = np.diff(indptr)
    position = np.arange(n_events, dtype=np.int64) - np.repeat(indptr[:-1], lengths)
    return position < np.repeat(keep_first, lengths)


def personalize_split(features: Features, seed: int = 42, test_fraction: float = 0.1) -> EvalSplit:
    indptr, items, lengths = _user_bounds(features)
    eligible = np.flatnonzero(lengths >= 2)
    if len(eligible) < 2:
        raise InputError("the personalize protocol needs at least 2 users with 2 or more interactions")
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(test_fraction * len(eligible))))
    test_users = np.sort(rng.choice(eligible, size=n_test, replace=False))
    is_test = np.zeros(features.n_users, dtype=bool)
    is_test[test_users] = True
    train = features.with_interactions(features.interactions[~is_test[features.interactions["user"].to_numpy()]])
    n = lengths[test_users]
    n_truth = np.clip(np.floor(0.1 * n + 0.5).astype(np.int64), 1, n - 1)
    n_input = n - n_truth
    context = features.context_matrix()
    in_ptr, in_items, *in_ctx = _segments(indptr[test_users], n_input, items, context)
    tr_ptr, tr_items = _segments(indptr[test_users] + n_input, n_truth, items)
    return EvalSplit("personalize", train, test_users.astype(np.int64), in_ptr, in_items, tr_ptr, tr_items, in_ctx[0] if in_ctx else None)


def leave_last_out_split(features: Features, stage: str = "test") -> EvalSplit:
    """``stage="test"``: truth = last event; ``"validation"``: truth = the one before."""
    indptr, items, lengths = _user_bounds(features)
    held_out = np.minimum(2, np.maximum(lengths - 1, 0))  # events held out per user (RecBole)
    train_len = lengths - held_out
    mask = _event_mask(indptr, len(items), train_len)
    train = features.with_interactions(features.interactions[mask])
    if stage == "test":
        users = np.flatnonzero(held_out >= 1)
        n_input = lengths[users] - 1
    elif stage == "validation":
        users = np.flatnonzero(held_out >= 2)
        n_input = lengths[users] - 2
    else:
        raise ValueError(stage)
    if len(users) == 0:
        raise InputError("the leave-last-out protocol needs users with 2 or more interactions")
    context = features.context_matrix()
    in_ptr, in_items, *in_ctx = _segments(indptr[users], n_input, items, context)
    tr_ptr = np.arange(len(users) + 1, dtype=np.int64)
    tr_items = items[indptr[users] + n_input]
    return EvalSplit("leave-last-out", train, users.astype(np.int64), in_ptr, in_items, tr_ptr, tr_items, in_ctx[0] if in_ctx else None)


def recommend_split(model: Recipe, split: EvalSplit, k: int = MAX_K, exclude_seen: bool = False) -> np.ndarray:
    """Top-k item codes for every test user (-1 pads when fewer are available)."""
    n = len(split.test_users)
    out = np.full((n, k), -1, dtype=np.int64)
    for start in range(0, n, SCORING_CHUNK):
        rows = slice(start, min(n, start + SCORING_CHUNK))
        items, _ = model.recommend(split.batch(rows), k, exclude_seen=exclude_seen)
        out[rows, : items.shape[1]] = items
    return out


def ranking_metrics(recommended: np.ndarray, split: EvalSplit, n_items: int, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Personalize's metric names for either protocol, computed without Python loops."""
    n, width = recommended.shape
    truth_ptr, truth_items = split.truth_indptr, split.truth_items
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(truth_ptr))
    truth_keys = np.unique(rows * (n_items + 1) + truth_items)
    n_truth = np.bincount(truth_keys // (n_items + 1), minlength=n)  # distinct relevant items
    rec_keys = np.arange(n, dtype=np.int64)[:, None] * (n_items + 1) + np.where(recommended >= 0, recommended, n_items)
    hits = np.isin(rec_keys, truth_keys) & (recommended >= 0)
    discounts = 1.0 / np.log2(np.arange(2, width + 2))
    ideal_cum = np.cumsum(discounts)
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), width)
    out: dict[str, float] = {}
    coverage_k = min(MAX_K, width)
    out["coverage"] = float(len(np.unique(recommended[:, :coverage_k][recommended[:, :coverage_k] >= 0])) / max(n_items, 1))
    for k in ks:
        k_eff = min(k, width)
        dcg = (hits[:, :k_eff] * discounts[:k_eff]).sum(axis=1)
        idcg = ideal_cum[np.clip(np.minimum(n_truth, k_eff) - 1, 0, None)]
        ndcg = np.where(n_truth > 0, dcg / idcg, 0.0)
        mrr = np.where(first_hit < k_eff, 1.0 / (first_hit + 1), 0.0)
        if split.protocol == "personalize":
            out[f"normalized_discounted_cumulative_gain_at_{k}"] = float(ndcg.mean())
            out[f"precision_at_{k}"] = float(hits[:, :k_eff].sum(axis=1).mean() / k)
            if k == MAX_K:
                out[f"mean_reciprocal_rank_at_{k}"] = float(mrr.mean())
        else:
            out[f"hit_rate_at_{k}"] = float(hits[:, :k_eff].any(axis=1).mean())
            out[f"normalized_discounted_cumulative_gain_at_{k}"] = float(ndcg.mean())
            out[f"mean_reciprocal_rank_at_{k}"] = float(mrr.mean())
    return dict(sorted(out.items()))


@dataclass
class EvaluationResult:
    recipe: str
    protocol: str
    metrics: dict[str, float]
    train_seconds: float
    train_events_per_second: float | None
    peak_rss_mb: float
    test_users: int
    train_events: int
    baseline: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        """The object ``evaluate --json`` prints (the CLI contract)."""
        return {
            "recipe": self.recipe,
            "protocol": self.protocol,
            "metrics": self.metrics,
            "train_seconds": self.train_seconds,
            "train_events_per_second": self.train_events_per_second,
            "peak_rss_mb": self.peak_rss_mb,
        }


def make_split(features: Features, protocol: str, seed: int = 42) -> EvalSplit:
    if protocol == "personalize":
        return personalize_split(features, seed=seed)
    if protocol == "leave-last-out":
        return leave_last_out_split(features, stage="test")
    raise InputError(f"unknown protocol {protocol!r} (use {' or '.join(PROTOCOLS)})")


def evaluate_split(recipe_cls: type[Recipe], params: dict[str, Any], split: EvalSplit, exclude_seen: bool = False, seed: int = 42) -> EvaluationResult:
    from .training import peak_rss_mb

    model = recipe_cls(**params)
    start = time.perf_counter()
    model.fit(split.train, seed=seed)
    seconds = time.perf_counter() - start
    recommended = recommend_split(model, split, MAX_K, exclude_seen=exclude_seen)
    metrics = ranking_metrics(recommended, split, split.train.n_items)
    n_train = split.train.n_interactions
    return EvaluationResult(
        recipe=recipe_cls.name,
        protocol=split.protocol,
        metrics=metrics,
        train_seconds=round(seconds, 4),
        train_events_per_second=round(n_train / seconds, 1) if seconds > 0 else None,
        peak_rss_mb=peak_rss_mb(),
        test_users=len(split.test_users),
        train_events=n_train,
    )


def evaluate(
    features: Features,
    recipe_cls: type[Recipe],
    params: dict[str, Any] | None = None,
    protocol: str = "personalize",
    exclude_seen: bool = False,
    seed: int = 42,
    with_baseline: bool = True,
) -> EvaluationResult:
    """Train on the protocol's training part, score the held-out part; with
    ``with_baseline`` also report aws-popularity-count on the same split."""
    split = make_split(features, protocol, seed=seed)
    result = evaluate_split(recipe_cls, recipe_cls.resolve_hyperparameters(params or {}), split, exclude_seen, seed)
    if with_baseline:
        from .recipes import PopularityCount

        result.baseline = (
            dict(result.metrics) if recipe_cls is PopularityCount else evaluate_split(PopularityCount, {}, split, exclude_seen, seed).metrics
        )
    return result
