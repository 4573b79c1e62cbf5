"""Which of the user's items comes back, learnt from event types and times (v2's repeat mode).

:mod:`.repeats` mixes a recipe's scores from a repeat mode (the user's own items) and an
explore mode (the rest), with one repeat share and one table of recency shares for every
user. Both are averages, and events say more than their order: on movielens-poc each rated
movie is a ``click`` and, rated high, also a ``watch`` with the same timestamp, so a movie
with only one of the two at the newest timestamp is likely the next event, and one with
both is done. With the averages, the newest item always came first, and 42 of the 610 test
users, whose next event completed an older pair, found it at rank 2-20.

RepeatNet (Ren et al., AAAI 2019) learns its repeat / explore gate and its repeat decoder
(attention over the session's positions) from the data. This head does the same with a
conditional logit (McFadden) over the user's distinct items plus one explore option, each
item described by

- its recency rank (newest distinct item first; the ranks past ``DEPTH`` share one weight,
  as in :mod:`.repeats`),
- the set of event types it had at its newest timestamp (up to ``KIND_BITS`` types, the
  rarer ones sharing a bit) crossed with how long before the user's newest event that was
  (``GAP_EDGES``: the same second, a minute, an hour, a day, a week, longer),
- how many events the user had with it (1, 2, 3-4, 5-8, more).

A history's scores give each item exp(score) and the explore option exp(0): the repeat
share of that user is the items' share of the total, and the recency weights of
:mod:`.repeats` are the items' exp(score). With only the rank feature the fit gives the
averages back. The weights are fit by maximum likelihood (L-BFGS) on the training
transitions (at most ``MAX_EXAMPLES``, drawn evenly), in a few seconds; the features come
from one compiled pass over the events.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
from numba import njit

from .repeats import RECENCY_DEPTH, move_to_front, slot_of

DEPTH = RECENCY_DEPTH  # ranks with their own weight; older items share the next one
KIND_BITS = 4  # event types 0..KIND_BITS-2 get a bit each, the others (and none) the last
N_PATTERNS = 1 << KIND_BITS
GAP_EDGES = np.array([0, 60, 3600, 86400, 7 * 86400], dtype=np.int64)  # seconds; <= each edge
N_GAPS = len(GAP_EDGES) + 1
COUNT_EDGES = np.array([1, 2, 4, 8], dtype=np.int64)  # events with the item; <= each edge
N_COUNTS = len(COUNT_EDGES) + 1
MAX_EXAMPLES = 200_000  # training transitions the head is fit on, at most
L2 = 1e-4  # weight decay of the fit (per example)
EXPLORE = DEPTH + 1  # the target index of an explore transition (DEPTH: an older item)
_SCRATCH = threading.local()  # the serving pass's per-item state, per thread


@dataclass(frozen=True)
class RepeatHead:
    """The fitted weights: ``rank`` [DEPTH + 1], ``kind_gap`` [N_PATTERNS * N_GAPS],
    ``count`` [N_COUNTS]; the explore option scores 0. ``kind_bits``: the bit of each
    event-type code (the KIND_BITS - 1 most frequent at the fit have their own; codes past
    its end, and -1, the last)."""

    rank: np.ndarray
    kind_gap: np.ndarray
    count: np.ndarray
    kind_bits: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        names = ("rank", "kind_gap", "count", "kind_bits")
        return {f"repeat_head_{name}": getattr(self, name) for name in names}

    @classmethod
    def read(cls, state: dict[str, np.ndarray]) -> RepeatHead | None:
        if "repeat_head_rank" not in state:
            return None
        return cls(
            np.asarray(state["repeat_head_rank"], dtype=np.float64),
            np.asarray(state["repeat_head_kind_gap"], dtype=np.float64),
            np.asarray(state["repeat_head_count"], dtype=np.float64),
            np.asarray(state["repeat_head_kind_bits"], dtype=np.int64),
        )

    def weights(
        self, rows: np.ndarray, items: np.ndarray, signals: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rows, items, exp(score), the row's repeat share) of each row's distinct items,
        newest first, from the history pairs (``rows`` ascending, each row's events oldest
        first) and their ``signals`` ([n, 2]: event-type code, timestamp)."""
        rows, items = np.asarray(rows, dtype=np.int64), np.asarray(items, dtype=np.int64)
        kinds, times = _kinds_times(signals, self.kind_bits)
        out = (np.empty_like(rows), np.empty_like(items), np.empty(len(rows)), np.empty(len(rows)))
        weights = (self.rank, self.kind_gap, self.count)
        kept = _score_rows(rows, items, kinds, times, _item_state(items), *weights, GAP_EDGES, COUNT_EDGES, *out)
        return out[0][:kept], out[1][:kept], out[2][:kept], out[3][:kept]


def _item_state(items: np.ndarray) -> np.ndarray:
    """[3, n_items] the serving pass's per-item state (newest time, event-type flags there,
    events), kept per thread: the pass leaves every count at 0, so a batch block allocates
    nothing (the other two rows are read only where the count is not)."""
    size = int(items.max()) + 1 if len(items) else 1
    state = getattr(_SCRATCH, "state", None)
    if state is None or state.shape[1] < size:
        state = _SCRATCH.state = np.zeros((3, size), dtype=np.int64)
    return state


def fit_repeat_head(indptr: np.ndarray, items: np.ndarray, signals: np.ndarray, seed: int = 0) -> RepeatHead | None:
    """The head fit on the training sequences (CSR ``indptr``, ``items``; per-event
    ``signals``); None where no transition repeats an item (nothing to learn)."""
    indptr, items = np.asarray(indptr, dtype=np.int64), np.asarray(items, dtype=np.int64)
    transitions = int(np.maximum(np.diff(indptr) - 1, 0).sum())
    if transitions == 0:
        return None
    keep = np.random.default_rng(seed).random(len(items)) < MAX_EXAMPLES / transitions
    kind_bits = _kind_bits(signals[:, 0])
    kinds, times = _kinds_times(signals, kind_bits)
    n_items = int(items.max()) + 1 if len(items) else 1
    n = int(keep.sum())
    features = np.zeros((n, DEPTH, 2), dtype=np.int16)  # (kind-gap cell, count bucket) per slot
    filled, tail, target = np.zeros(n, dtype=np.int16), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    made = _examples(indptr, items, kinds, times, n_items, keep, GAP_EDGES, COUNT_EDGES, features, filled, tail, target)
    if not (target[:made] < EXPLORE).any():
        return None
    return RepeatHead(*_fit(features[:made], filled[:made], tail[:made], target[:made]), kind_bits)


def _kind_bits(codes: np.ndarray) -> np.ndarray:
    """The bit of each event-type code: the most frequent KIND_BITS - 1 their own, by
    frequency, the others the last."""
    counts = np.bincount(np.asarray(codes, dtype=np.int64)[codes >= 0]) if (codes >= 0).any() else np.zeros(0)
    bits = np.full(len(counts), KIND_BITS - 1, dtype=np.int64)
    top = np.argsort(-counts, kind="stable")[: KIND_BITS - 1]
    bits[top] = np.arange(len(top))
    return bits


def _kinds_times(signals: np.ndarray, kind_bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the flag 1 << bit of each event's type, its timestamp) from ``signals``."""
    codes = np.asarray(signals[:, 0], dtype=np.int64)
    known = (codes >= 0) & (codes < len(kind_bits))
    bits = np.where(known, kind_bits[np.where(known, codes, 0)] if len(kind_bits) else 0, KIND_BITS - 1)
    return (1 << bits).astype(np.int64), np.asarray(signals[:, 1], dtype=np.int64)


def _fit(
    features: np.ndarray, filled: np.ndarray, tail: np.ndarray, target: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum likelihood of the targets under the conditional logit (L-BFGS, float64)."""
    n = len(target)
    cell = torch.from_numpy(features[:, :, 0].astype(np.int64))
    count = torch.from_numpy(features[:, :, 1].astype(np.int64))
    slot = torch.arange(DEPTH)[None, :] < torch.from_numpy(filled.astype(np.int64))[:, None]
    log_tail = torch.from_numpy(np.where(tail > 0, np.log(np.maximum(tail, 1)), -np.inf))
    y = torch.from_numpy(target)
    sizes = (DEPTH + 1, N_PATTERNS * N_GAPS, N_COUNTS)
    params = [torch.zeros(size, dtype=torch.float64, requires_grad=True) for size in sizes]
    rank, kind_gap, counts = params
    optimiser = torch.optim.LBFGS(params, lr=1.0, max_iter=100, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def loss_of() -> torch.Tensor:
        optimiser.zero_grad()
        scores = rank[:DEPTH][None, :] + kind_gap[cell] + counts[count]
        scores = torch.where(slot, scores, torch.tensor(-torch.inf, dtype=torch.float64))
        logits = torch.cat([scores, (rank[DEPTH] + log_tail)[:, None], torch.zeros(n, 1, dtype=torch.float64)], 1)
        loss = torch.nn.functional.cross_entropy(logits, y) + L2 * sum((p * p).sum() for p in params)
        loss.backward()
        return loss

    optimiser.step(loss_of)
    return rank.detach().numpy().copy(), kind_gap.detach().numpy().copy(), counts.detach().numpy().copy()


@njit(nogil=True, cache=True)
def _bucket(value: int, edges: np.ndarray) -> int:
    b = 0
    while b < len(edges) and value > edges[b]:
        b += 1
    return b


@njit(nogil=True, cache=True)
def _see(item: int, kind: int, time: int, last: np.ndarray, pattern: np.ndarray, count: np.ndarray) -> None:
    """One event into the per-item state: the event types at the item's newest time."""
    if count[item] > 0 and last[item] == time:
        pattern[item] |= kind
    else:
        pattern[item] = kind
    last[item] = time
    count[item] += 1


@njit(nogil=True, cache=True, inline="always")
def _features(
    item: int, now: int, last: np.ndarray, pattern: np.ndarray, count: np.ndarray, gap_edges, count_edges
) -> tuple[int, int]:
    """An item's (kind-gap cell, count bucket) at time ``now``, for the fit and for serving."""
    gap = _bucket(now - last[item], gap_edges)
    return pattern[item] * (len(gap_edges) + 1) + gap, _bucket(count[item], count_edges)


@njit(nogil=True, cache=True)
def _examples(
    indptr, items, kinds, times, n_items, keep, gap_edges, count_edges, features, filled, tail, target
) -> int:
    """The kept transitions (event e with an earlier event of its user) as examples: the
    features of the user's DEPTH newest distinct items before e (a move-to-front list), how
    many older ones there were, and where e's item was (its slot, DEPTH, or EXPLORE)."""
    depth = features.shape[1]
    recent = np.empty(depth, dtype=np.int64)
    last = np.zeros(n_items, dtype=np.int64)
    pattern = np.zeros(n_items, dtype=np.int64)
    count = np.zeros(n_items, dtype=np.int64)
    made = 0
    for u in range(len(indptr) - 1):
        filled_u, distinct = 0, 0
        for e in range(indptr[u], indptr[u + 1]):
            item = items[e]
            j = slot_of(recent, filled_u, item)
            if keep[e] and e > indptr[u]:
                for s in range(filled_u):
                    cell, bucket = _features(recent[s], times[e - 1], last, pattern, count, gap_edges, count_edges)
                    features[made, s, 0], features[made, s, 1] = cell, bucket
                filled[made], tail[made] = filled_u, distinct - filled_u
                target[made] = j if j < filled_u else (depth if count[item] > 0 else depth + 1)
                made += 1
            if count[item] == 0:
                distinct += 1
            _see(item, kinds[e], times[e], last, pattern, count)
            filled_u = move_to_front(recent, filled_u, j, item)
        for e in range(indptr[u], indptr[u + 1]):
            count[items[e]] = 0
    return made


@njit(nogil=True, cache=True)
def _score_rows(
    rows,
    items,
    kinds,
    times,
    state,
    w_rank,
    w_kind_gap,
    w_count,
    gap_edges,
    count_edges,
    out_rows,
    out_items,
    out_weights,
    out_shares,
) -> int:
    """:meth:`RepeatHead.weights`' pass: per row, the events read oldest first into the
    per-item ``state`` (its counts at 0, and left so), then newest first for the distinct
    items and their scores."""
    depth = len(w_rank) - 1
    last, pattern, count = state[0], state[1], state[2]
    kept, start = 0, 0
    while start < len(rows):
        end = start
        while end < len(rows) and rows[end] == rows[start]:
            end += 1
        for e in range(start, end):
            _see(items[e], kinds[e], times[e], last, pattern, count)
        first, total = kept, 1.0  # the explore option's exp(0)
        for e in range(end - 1, start - 1, -1):
            item = items[e]
            if count[item] > 0:
                rank = kept - first
                score = w_rank[min(rank, depth)]
                if rank < depth:
                    cell, bucket = _features(item, times[end - 1], last, pattern, count, gap_edges, count_edges)
                    score += w_kind_gap[cell] + w_count[bucket]
                out_rows[kept], out_items[kept], out_weights[kept] = rows[e], item, np.exp(score)
                total += out_weights[kept]
                count[item] = 0  # seen: the older events of the item are skipped
                kept += 1
        for q in range(first, kept):
            out_shares[q] = 1.0 - 1.0 / total
        start = end
    return kept


__all__ = ["RepeatHead", "fit_repeat_head"]
