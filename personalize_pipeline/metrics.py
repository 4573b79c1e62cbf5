"""Offline metrics with Amazon Personalize's names, under three protocols.

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

``time`` — a time-based holdout, as a weekly retrain is really used: the model trains on
every event before a cut-off time (default: the time by which 90% of the events had
happened) and is scored on the users active on both sides of it; a user's events before
the cut-off are the input, the distinct items after it the truth. Same names as
``personalize``.

Every result carries the popularity baseline (aws-popularity-count trained and scored on
the same split) and a per-segment breakdown at K = 10 (:func:`segment_breakdown`): users by
history length, truth items by training popularity (head / torso / tail by share of the
training events, and new items that had no training events).

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
PROTOCOLS = ("personalize", "leave-last-out", "time")
TIME_HOLDOUT_QUANTILE = 0.9
USER_LENGTH_BUCKETS = ((1, 5), (6, 20), (21, 100), (101, None))
ITEM_POPULARITY_SHARES = (("head", 0.5), ("torso", 0.8), ("tail", 1.0))  # cumulative share of training events
SEGMENT_K = 10
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
    cutoff: float | None = None  # time protocol: epoch seconds
    # each test user's first input event in ``events`` (event-type codes, timestamps of every
    # event, as Features.event_columns gives them): a batch's signals are gathered from them
    input_starts: np.ndarray | None = None
    events: tuple[np.ndarray, np.ndarray] | None = None

    def batch(self, rows: slice) -> UserBatch:
        ptr = self.input_indptr[rows.start : rows.stop + 1]
        items = self.input_items[ptr[0] : ptr[-1]]
        ctx = self.input_context[ptr[0] : ptr[-1]] if self.input_context is not None else None
        sig = None
        if self.events is not None and self.input_starts is not None:
            _, index = segment_index(self.input_starts[rows], np.diff(ptr))
            sig = np.stack([column[index].astype(np.int64) for column in self.events], axis=1)
        return UserBatch(self.test_users[rows], ptr - ptr[0], items, ctx, history_signals=sig)


def _user_bounds(features: Features) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    indptr, items = features.sequences()
    lengths = np.diff(indptr)
    return indptr, items, lengths


def _segments(starts: np.ndarray, lengths: np.ndarray, values: np.ndarray, *extras: np.ndarray | None):
    """CSR of values[starts[i] : starts[i] + lengths[i]] for each i, and the same rows of
    each of ``extras`` (None stays None)."""
    ptr, idx = segment_index(starts, lengths)
    return ptr, values[idx], *(None if extra is None else extra[idx] for extra in extras)


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
    train = features.where(~is_test[features.interactions["user"].to_numpy()])
    n = lengths[test_users]
    n_truth = np.clip(np.floor(0.1 * n + 0.5).astype(np.int64), 1, n - 1)
    n_input = n - n_truth
    in_ptr, in_items, in_ctx = _segments(indptr[test_users], n_input, items, features.context_matrix())
    tr_ptr, tr_items = _segments(indptr[test_users] + n_input, n_truth, items)
    events = (indptr[test_users], features.event_columns())
    return EvalSplit(
        "personalize", train, test_users.astype(np.int64), in_ptr, in_items, tr_ptr, tr_items, in_ctx, None, *events
    )


def leave_last_out_split(features: Features, stage: str = "test") -> EvalSplit:
    """``stage="test"``: truth = last event; ``"validation"``: truth = the one before."""
    indptr, items, lengths = _user_bounds(features)
    held_out = np.minimum(2, np.maximum(lengths - 1, 0))  # events held out per user (RecBole)
    train_len = lengths - held_out
    mask = _event_mask(indptr, len(items), train_len)
    train = features.where(mask)
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
    in_ptr, in_items, in_ctx = _segments(indptr[users], n_input, items, features.context_matrix())
    tr_ptr = np.arange(len(users) + 1, dtype=np.int64)
    tr_items = items[indptr[users] + n_input]
    events = (indptr[users], features.event_columns())
    return EvalSplit(
        "leave-last-out", train, users.astype(np.int64), in_ptr, in_items, tr_ptr, tr_items, in_ctx, None, *events
    )


def time_split(features: Features, cutoff: float | None = None) -> EvalSplit:
    """Train on events before ``cutoff`` (epoch seconds; default the 0.9 quantile of event
    times), test the users with events on both sides: input = events before, truth = after."""
    ts = features.interactions["timestamp"].to_numpy()
    if len(ts) == 0:
        raise InputError("the time protocol needs interactions")
    if cutoff is None:
        cutoff = float(np.quantile(ts, TIME_HOLDOUT_QUANTILE, method="higher"))
    indptr, items, lengths = _user_bounds(features)
    before = ts < cutoff
    n_before = np.bincount(features.interactions["user"].to_numpy()[before], minlength=features.n_users).astype(
        np.int64
    )
    n_after = lengths - n_before
    users = np.flatnonzero((n_before >= 1) & (n_after >= 1))
    if not before.any() or len(users) == 0:
        lo, hi = int(ts.min()), int(ts.max())
        raise InputError(
            f"time holdout cut-off {cutoff:.0f} leaves no user with events on both sides (events span {lo} to {hi})"
        )
    train = features.where(before)
    in_ptr, in_items, in_ctx = _segments(indptr[users], n_before[users], items, features.context_matrix())
    tr_ptr, tr_items = _segments(indptr[users] + n_before[users], n_after[users], items)
    events = (indptr[users], features.event_columns())
    return EvalSplit(
        "time", train, users.astype(np.int64), in_ptr, in_items, tr_ptr, tr_items, in_ctx, float(cutoff), *events
    )


def parse_cutoff(value: str | float | None) -> float | None:
    """A cut-off time as epoch seconds, or an ISO date / date-time (UTC unless it says)."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    import pandas as pd

    try:
        stamp = pd.Timestamp(str(value))
    except (TypeError, ValueError):
        raise InputError(f"cut-off {value!r} is neither epoch seconds nor an ISO date (e.g. 2018-06-01)") from None
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return float(stamp.timestamp())


def recommend_split(model: Recipe, split: EvalSplit, k: int = MAX_K, exclude_seen: bool = False) -> np.ndarray:
    """Top-k item codes for every test user (-1 pads when fewer are available)."""
    n = len(split.test_users)
    out = np.full((n, k), -1, dtype=np.int64)
    for start in range(0, n, SCORING_CHUNK):
        rows = slice(start, min(n, start + SCORING_CHUNK))
        items, _ = model.recommend(split.batch(rows), k, exclude_seen=exclude_seen)
        out[rows, : items.shape[1]] = items
    return out


def ranking_metrics(
    recommended: np.ndarray, split: EvalSplit, n_items: int, ks: tuple[int, ...] = KS
) -> dict[str, float]:
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
    out["coverage"] = float(
        len(np.unique(recommended[:, :coverage_k][recommended[:, :coverage_k] >= 0])) / max(n_items, 1)
    )
    for k in ks:
        k_eff = min(k, width)
        dcg = (hits[:, :k_eff] * discounts[:k_eff]).sum(axis=1)
        idcg = ideal_cum[np.clip(np.minimum(n_truth, k_eff) - 1, 0, None)]
        ndcg = np.where(n_truth > 0, dcg / idcg, 0.0)
        mrr = np.where(first_hit < k_eff, 1.0 / (first_hit + 1), 0.0)
        if split.protocol in ("personalize", "time"):
            out[f"normalized_discounted_cumulative_gain_at_{k}"] = float(ndcg.mean())
            out[f"precision_at_{k}"] = float(hits[:, :k_eff].sum(axis=1).mean() / k)
            if k == MAX_K:
                out[f"mean_reciprocal_rank_at_{k}"] = float(mrr.mean())
        else:
            out[f"hit_rate_at_{k}"] = float(hits[:, :k_eff].any(axis=1).mean())
            out[f"normalized_discounted_cumulative_gain_at_{k}"] = float(ndcg.mean())
            out[f"mean_reciprocal_rank_at_{k}"] = float(mrr.mean())
    return dict(sorted(out.items()))


def _hit_matrix(recommended: np.ndarray, split: EvalSplit, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hits [n, width] bool, truth row per truth pair, truth pair hit rank or -1)."""
    n, width = recommended.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(split.truth_indptr))
    truth_keys = rows * (n_items + 1) + split.truth_items
    rec_keys = np.arange(n, dtype=np.int64)[:, None] * (n_items + 1) + np.where(recommended >= 0, recommended, n_items)
    hits = np.isin(rec_keys, truth_keys) & (recommended >= 0)
    # rank of each truth pair in its user's list (-1: not recommended)
    flat = rec_keys.ravel()
    order = np.argsort(flat, kind="stable")
    pos = np.searchsorted(flat[order], truth_keys)
    pos = np.minimum(pos, len(flat) - 1)
    found = flat[order][pos] == truth_keys
    rank = np.where(found, order[pos] % width, -1)
    return hits, rows, rank


def item_popularity_segments(train: Features) -> np.ndarray:
    """Segment name per item code: new (no training events), head, torso, tail."""
    counts = np.bincount(train.interactions["item"].to_numpy(), minlength=train.n_items)
    order = np.argsort(-counts, kind="stable")
    # share of the training events taken by the items more popular than each item
    before = np.concatenate([[0.0], np.cumsum(counts[order])[:-1]]) / max(counts.sum(), 1)
    bounds = [upto for _, upto in ITEM_POPULARITY_SHARES[:-1]]
    names = np.empty(train.n_items, dtype=object)
    names[order] = np.array([name for name, _ in ITEM_POPULARITY_SHARES], dtype=object)[
        np.searchsorted(bounds, before, side="right")
    ]
    names[counts == 0] = "new"
    return names


def segment_breakdown(recommended: np.ndarray, split: EvalSplit, k: int = SEGMENT_K) -> dict[str, list[dict[str, Any]]]:
    """Metrics at ``k`` per segment: users by input history length (NDCG, hit rate, recall),
    truth items by training popularity (recall: share of the truth pairs recommended in the
    top k; share of the top-k slots given to the segment)."""
    n_items = split.train.n_items
    hits, rows, rank = _hit_matrix(recommended, split, n_items)
    n, width = recommended.shape
    k_eff = min(k, width)
    rows_unique_truth = np.unique(rows * (n_items + 1) + split.truth_items) // (n_items + 1)
    n_truth = np.bincount(rows_unique_truth, minlength=n)
    discounts = 1.0 / np.log2(np.arange(2, k_eff + 2))
    dcg = (hits[:, :k_eff] * discounts).sum(axis=1)
    idcg = np.cumsum(discounts)[np.clip(np.minimum(n_truth, k_eff) - 1, 0, None)]
    ndcg = np.where(n_truth > 0, dcg / idcg, 0.0)
    hit = np.asarray(hits[:, :k_eff].any(axis=1))  # one flag per user
    recall = hits[:, :k_eff].sum(axis=1) / np.maximum(n_truth, 1)
    length = np.diff(split.input_indptr)
    users = []
    for low, high in USER_LENGTH_BUCKETS:
        mask: np.ndarray = length >= low
        if high is not None:
            mask &= length <= high
        label = f"{low}-{high}" if high is not None else f"{low}+"
        if mask.any():
            users.append(
                {
                    "segment": f"history {label}",
                    "users": int(mask.sum()),
                    f"normalized_discounted_cumulative_gain_at_{k}": float(ndcg[mask].mean()),
                    f"hit_rate_at_{k}": float(hit[mask].mean()),
                    f"recall_at_{k}": float(recall[mask].mean()),
                }
            )
    item_segment = item_popularity_segments(split.train)
    truth_segment = item_segment[split.truth_items]
    top = recommended[:, :k_eff]
    top_segment = item_segment[top[top >= 0]]
    items = []
    for name in ("head", "torso", "tail", "new"):
        mask = truth_segment == name
        items.append(
            {
                "segment": name,
                "catalogue_items": int((item_segment == name).sum()),
                "truth_events": int(mask.sum()),
                f"recall_at_{k}": float(((rank[mask] >= 0) & (rank[mask] < k_eff)).mean()) if mask.any() else 0.0,
                f"share_of_top_{k}": float((top_segment == name).mean()) if len(top_segment) else 0.0,
            }
        )
    return {"users_by_history_length": users, "items_by_popularity": items}


COLLAPSE_METRIC = "normalized_discounted_cumulative_gain_at_10"
COLLAPSE_DROP = 0.5


def compare_metrics(
    new: dict[str, float], previous: dict[str, float], collapse_drop: float = COLLAPSE_DROP
) -> dict[str, Any]:
    """A new solution version's metrics against the previous one's: per metric the values and
    the relative change, and the metrics that collapsed (dropped by more than
    ``collapse_drop``, e.g. 0.5 = lost over half their value)."""
    rows: list[dict[str, Any]] = []
    for name, value in new.items():
        old = previous.get(name)
        change = (value / old - 1.0) if old else None
        rows.append({"metric": name, "new": value, "previous": old, "change": change})
    collapsed = [r["metric"] for r in rows if r["change"] is not None and r["change"] < -collapse_drop]
    return {"rows": rows, "collapsed": collapsed}


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
    segments: dict[str, list[dict[str, Any]]] | None = None
    baseline_segments: dict[str, list[dict[str, Any]]] | None = None
    cutoff: float | None = None
    training: dict[str, Any] | None = None  # the recipe's training report (epochs, early stopping, ...)

    @property
    def lift(self) -> dict[str, float | None]:
        """Relative lift over the popularity baseline: value / baseline - 1 (None where the
        baseline is 0)."""
        base = self.baseline or {}
        return {k: (v / base[k] - 1.0) if base.get(k) else None for k, v in self.metrics.items()}

    def report(self) -> dict[str, Any]:
        """Everything: the contract fields plus baseline, lift, segments (the manifest's record)."""
        return {
            **self.to_json(),
            "test_users": self.test_users,
            "train_events": self.train_events,
            **({"cutoff": self.cutoff} if self.cutoff is not None else {}),
            "baseline_popularity": self.baseline or {},
            "lift_over_popularity": self.lift if self.baseline else {},
            "segments": self.segments or {},
            "baseline_segments": self.baseline_segments or {},
        }

    def to_json(self) -> dict[str, Any]:
        """The object ``evaluate --json`` prints (the CLI contract): baseline = the popularity
        recipe on the same split, lift = value / baseline - 1 per metric (None where the
        baseline is 0); both empty when the result was computed without a baseline."""
        return {
            "recipe": self.recipe,
            "protocol": self.protocol,
            "metrics": self.metrics,
            "baseline": self.baseline or {},
            "lift": self.lift if self.baseline else {},
            "train_seconds": self.train_seconds,
            "train_events_per_second": self.train_events_per_second,
            "peak_rss_mb": self.peak_rss_mb,
            "training": self.training or {},
        }


def make_split(features: Features, protocol: str, seed: int = 42, cutoff: float | None = None) -> EvalSplit:
    if cutoff is not None and protocol != "time":
        raise InputError("a cut-off time applies to the time protocol only")
    if protocol == "personalize":
        return personalize_split(features, seed=seed)
    if protocol == "leave-last-out":
        return leave_last_out_split(features, stage="test")
    if protocol == "time":
        return time_split(features, cutoff)
    raise InputError(f"unknown protocol {protocol!r} (use {' or '.join(PROTOCOLS)})")


def evaluate_split(
    recipe_cls: type[Recipe], params: dict[str, Any], split: EvalSplit, exclude_seen: bool = False, seed: int = 42
) -> EvaluationResult:
    from .measure import peak_rss_mb

    model = recipe_cls(**params)
    start = time.perf_counter()
    model.fit(split.train, seed=seed)
    seconds = time.perf_counter() - start
    recommended = recommend_split(model, split, MAX_K, exclude_seen=exclude_seen)
    metrics = ranking_metrics(recommended, split, split.train.n_items)
    segments = segment_breakdown(recommended, split)
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
        segments=segments,
        cutoff=split.cutoff,
        training=model.training_stats(),
    )


def evaluate(
    features: Features,
    recipe_cls: type[Recipe],
    params: dict[str, Any] | None = None,
    protocol: str = "personalize",
    exclude_seen: bool = False,
    seed: int = 42,
    with_baseline: bool = True,
    cutoff: float | None = None,
) -> EvaluationResult:
    """Train on the protocol's training part, score the held-out part; with
    ``with_baseline`` also report aws-popularity-count on the same split (metrics and
    segments). ``cutoff`` (epoch seconds) is the time protocol's cut-off."""
    split = make_split(features, protocol, seed=seed, cutoff=cutoff)
    result = evaluate_split(recipe_cls, recipe_cls.resolve_hyperparameters(params or {}), split, exclude_seen, seed)
    if with_baseline:
        from .recipes import PopularityCount

        base = (
            result if recipe_cls is PopularityCount else evaluate_split(PopularityCount, {}, split, exclude_seen, seed)
        )
        result.baseline = dict(base.metrics)
        result.baseline_segments = base.segments
    return result
