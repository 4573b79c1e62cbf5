"""Repeat-aware scores: how likely the next event is an item the user already has.

A sequence model that sees only a user's newest ``max_sequence_length`` events (the v2
transformer) cannot know which older items the user already had, and its softmax gives
popular items the user rated long ago the same mass as new ones. On data where nobody
repeats an item (MovieLens ratings: each movie is rated once) those items fill the top of
the list: aws-user-personalization-v2 reached NDCG@10 0.059 on ML-100k, and 0.11 with the
user's items left out (bench/README.md, session 10). The GRU recipes, whose cached state
has read the whole history, do the same (aws-hrnn on ML-100k: 0.076 raw, 0.119 mixed;
session 11), so every neural USER_PERSONALIZATION recipe mixes. Where people do repeat
(re-buying, click then watch) leaving them out would be wrong.

RepeatNet (Ren et al., "RepeatNet: A Repeat Aware Neural Recommendation Machine for
Session-based Recommendation", AAAI 2019) splits the next-item distribution into a repeat
mode (an item of the history) and an explore mode (any other item), each with its own
probability. Here the model's softmax ``p`` gives the ranking inside each mode, and the
mode probability is the share ``r`` of training transitions whose next item was already in
the user's history (measured once at training time; smoothed as (repeats + ½) / (transitions
+ 1)):

    P(i) = r · p(i) / p(seen)            for the items the user has,
    P(i) = (1 - r) · p(i) / (1 - p(seen)) for the others,

a proper distribution, so the scores stay normalised over the catalogue. With r near 0 the
user's items drop to the bottom (but stay rankable, e.g. when a filter leaves nothing else);
with r near 1 they rise to the top in the model's order. In logits: the user's items get
log(r / p(seen)) - log((1 - r) / (1 - p(seen))) added; the rest of the row's shift is
common to every item and cancels in the softmax.

**Which of the user's items comes back** (RepeatNet's repeat decoder attends over the
positions of the session, not over item identities): people mostly come back to what they
had last. The share ``pi[j]`` of training repeats whose item was the user's ``j``-th most
recent distinct item (``j < RECENCY_DEPTH``; the last entry pools the older ones) is
measured with the repeat share, and the repeat mode mixes it with the model's order:

    P(i | repeat) = lambda · pi[rank(i)] / sum of pi over the user's ranks
                    + (1 - lambda) · p(i) / p(seen),

``lambda`` being the hyperparameter ``repeat_recency`` (items older than the depth share
their pooled entry equally). How informative recency is differs by data (the best weight
was 1 on movielens-poc, 0.5–0.75 on airline-contextual and 0.25 on the synthetic demo
data, whose repeats go back to any item the user had), so by default (``-1``) it is chosen
after a FULL training: the weight of 0, 0.25, 0.5, 0.75 or 1 that ranks the held-out
newest events best with the kept weights, or no mixing at all where they rank better
unmixed (on the demo data the model's own scores already know which items come back; 0.25
without held-out events, i.e. with early stopping off). A user's item the model cannot
score (never trained on: on movielens-poc the click that comes just before its watch is,
in 3% of the test users, the item's only earlier event) keeps its recency mass, so it is
recommended again as people do, unless the recipe may never recommend it
(aws-hrnn-coldstart's warm items). On
movielens-poc, 87% of repeats are of the item just before and 6% of the one before it;
one trained model each scored both ways (leave-last-out, one thread; weight 0.75):
aws-hrnn NDCG@10 0.6152 -> 0.6615, aws-user-personalization-v2 0.6229 -> 0.6619;
airline-contextual 0.2449 -> 0.2473 and 0.2827 -> 0.2842 (bench/README.md, session 23).

**Per user, from event types and times** (the v2 recipes; :mod:`.repeat_head`): the share
and the recency shares are averages over every user; a repeat head fit on the training
transitions gives each history its own share and its own weight per item (``head`` of
:class:`RepeatMixture`), in the formulas above, wherever the history's events come with
their signals (event type, timestamp); without them the averages apply.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from numba import njit

from .base import HyperParameter

if TYPE_CHECKING:
    from .repeat_head import RepeatHead

P_SEEN_RANGE = (1e-12, 1.0 - 1e-6)  # p(seen) clamped: no division by 0, no log of 0
SHARE_RANGE = (1e-9, 1.0 - 1e-6)  # a head's repeat share clamped likewise
RECENCY_DEPTH = 16  # ranks of recency measured one by one; older items share the last entry
# the hyperparameters of every recipe that mixes (default on)
REPEAT_AWARE_HP = HyperParameter(
    "repeat_aware",
    bool,
    True,
    help="mix the scores with the share of events that repeat one of the user's items (RepeatNet's repeat / "
    "explore modes; see recipes/repeats.py)",
)
RECENCY_AUTO = -1.0  # repeat_recency: chosen after training on the held-out newest events
RECENCY_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the weights chosen among
RECENCY_FALLBACK = 0.25  # auto without held-out events (early stopping off)
REPEAT_RECENCY_HP = HyperParameter(
    "repeat_recency",
    float,
    RECENCY_AUTO,
    RECENCY_AUTO,
    1.0,
    help="weight of recency in the repeat mode: how often repeats were of the user's newest, second newest, ... "
    "item, against the model's order of the user's items (0 = the model's order only); -1 = auto: the weight of "
    f"{', '.join(map(str, RECENCY_WEIGHTS))} that ranks the held-out newest events best, or no mixing where they rank "
    f"better unmixed ({RECENCY_FALLBACK} without held-out events; see recipes/repeats.py)",
)
REPEAT_HPS = (REPEAT_AWARE_HP, REPEAT_RECENCY_HP)
NORMALISER_MIN_UNSEEN = 1e-3  # 1 - p(seen) below this: the mixed normaliser is summed, not derived
# a history as the mixture reads it: (row, item) pairs, rows ascending and each row's events
# oldest first, and the events' [n, 2] signals (event type, timestamp) or None
RepeatHistory = tuple[np.ndarray, np.ndarray, np.ndarray | None]
_SCRATCH = threading.local()  # row_log_z's work buffer, per thread


@dataclass(frozen=True)
class RepeatMixture:
    """How a recipe mixes its scores: the repeat ``share`` r, the recency shares ``recency``
    ([RECENCY_DEPTH + 1] or None: a version saved before they existed) weighed by
    ``recency_weight`` (lambda), and ``revivable`` ([n_items] bool, None = every item): the
    history items that get their recency mass even where the model's logit is -inf.
    ``head`` (:class:`.repeat_head.RepeatHead`, or None): where the history's event types
    and times are known, each user's share and the weights of their items come from it
    instead of ``share`` and ``recency``."""

    share: float
    recency: np.ndarray | None = None
    recency_weight: float = 0.0
    revivable: np.ndarray | None = None
    head: RepeatHead | None = None

    @property
    def weight(self) -> float:
        """lambda as applied: 0 without recency shares."""
        return float(self.recency_weight) if self.recency is not None else 0.0

    def pairs(self, rows: np.ndarray, items: np.ndarray, signals: np.ndarray | None = None) -> HistoryPairs:
        """The distinct (row, item) pairs of a history (``rows`` ascending, each row's items
        oldest first) with their recency weights (see :func:`history_pairs`), or the head's
        weights and shares where there is one and the events' ``signals`` are known."""
        if self.head is not None and signals is not None:
            return HistoryPairs(*self.head.weights(rows, items, signals))
        return history_pairs(rows, items, self.recency if self.recency is not None else _FLAT)

    def row_shares(self, pairs: HistoryPairs, n: int) -> np.ndarray:
        """[n] each row's repeat share: the head's where it gave one, else ``share``."""
        out = np.full(n, float(self.share))
        if pairs.shares is not None:
            out[pairs.rows] = np.clip(pairs.shares, *SHARE_RANGE)
        return out


_FLAT = np.ones(RECENCY_DEPTH + 1)


@dataclass(frozen=True)
class HistoryPairs:
    """Distinct (``rows``, ``items``) pairs of a history, by row and newest first, with the
    recency share of each (``weights``: pi of its rank, the pooled entry split equally among
    a row's older items, or the head's exp(score); not normalised per row) and, from a head,
    the repeat share of each pair's row (``shares``)."""

    rows: np.ndarray
    items: np.ndarray
    weights: np.ndarray
    shares: np.ndarray | None = None


def history_pairs(rows: np.ndarray, items: np.ndarray, recency: np.ndarray) -> HistoryPairs:
    """Each row's distinct items ranked by their newest occurrence (one compiled pass over
    the pairs; ``rows`` are sorted first where they are not ascending)."""
    rows, items = np.asarray(rows, dtype=np.int64), np.asarray(items, dtype=np.int64)
    if len(rows) and bool((rows[1:] < rows[:-1]).any()):
        order = np.argsort(rows, kind="stable")
        rows, items = rows[order], items[order]
    out_rows, out_items = np.empty_like(rows), np.empty_like(items)
    weights = np.empty(len(rows))
    size = int(items.max()) + 1 if len(items) else 1
    marks = getattr(_SCRATCH, "marks", None)
    if marks is None or len(marks) < size:
        marks = _SCRATCH.marks = np.zeros(size, dtype=np.bool_)  # all False between calls
    kept = _distinct_newest_first(
        rows, items, np.asarray(recency, dtype=np.float64), marks, out_rows, out_items, weights
    )
    return HistoryPairs(out_rows[:kept], out_items[:kept], weights[:kept])


@njit(nogil=True, cache=True)
def _distinct_newest_first(
    rows: np.ndarray,
    items: np.ndarray,
    recency: np.ndarray,
    marks: np.ndarray,
    out_rows: np.ndarray,
    out_items: np.ndarray,
    weights: np.ndarray,
) -> int:
    """:func:`history_pairs`' pass: each row's pairs read newest first, an item kept at its
    first sight (``marks``, cleared after the row), weighted by ``recency`` of its rank; the
    items past the last rank share that entry equally. Returns how many pairs were kept."""
    depth = len(recency) - 1
    kept, start = 0, 0
    while start < len(rows):
        end = start
        while end < len(rows) and rows[end] == rows[start]:
            end += 1
        first = kept
        for e in range(end - 1, start - 1, -1):
            item = items[e]
            if not marks[item]:
                marks[item] = True
                out_rows[kept], out_items[kept] = rows[e], item
                weights[kept] = recency[min(kept - first, depth)]
                kept += 1
        for q in range(first + depth, kept):
            weights[q] /= kept - first - depth
        for q in range(first, kept):
            marks[out_items[q]] = False
        start = end
    return kept


def repeat_counts(indptr: np.ndarray, items: np.ndarray) -> np.ndarray:
    """[RECENCY_DEPTH + 1] the training repeats (events whose item the user already had) by
    the recency rank of their item: the user's newest, second newest, ... distinct item, the
    last entry older ones (one compiled pass over the per-user CSR sequences)."""
    return _recency_counts(np.asarray(indptr, dtype=np.int64), np.asarray(items, dtype=np.int64), RECENCY_DEPTH)


def repeat_share(indptr: np.ndarray, counts: np.ndarray) -> float:
    """The smoothed share of transitions (an event after the user's first) whose item the
    user already had, from the sequences' ``indptr`` and their :func:`repeat_counts`."""
    transitions = int(np.maximum(np.diff(indptr) - 1, 0).sum())
    return (float(counts.sum()) + 0.5) / (transitions + 1.0)


def recency_shares(counts: np.ndarray) -> np.ndarray:
    """[RECENCY_DEPTH + 1] the share of :func:`repeat_counts`' repeats at each recency rank,
    each count smoothed by ½."""
    smoothed = counts + 0.5
    return smoothed / smoothed.sum()


@njit(nogil=True, cache=True)
def _recency_counts(indptr: np.ndarray, items: np.ndarray, depth: int) -> np.ndarray:
    """Repeats by the recency rank of their item, one pass over the events: each user's
    ``depth`` newest distinct items in a move-to-front list; a repeat not found there is
    older (a first occurrence is told by a flag per item, reset after the user)."""
    counts = np.zeros(depth + 1)
    recent = np.empty(depth, dtype=np.int64)
    had = np.zeros(int(items.max()) + 1 if len(items) else 1, dtype=np.bool_)
    for u in range(len(indptr) - 1):
        filled = 0
        for e in range(indptr[u], indptr[u + 1]):
            item = items[e]
            j = slot_of(recent, filled, item)
            if had[item]:
                counts[min(j, depth)] += 1
            had[item] = True
            filled = move_to_front(recent, filled, j, item)
        for e in range(indptr[u], indptr[u + 1]):
            had[items[e]] = False
    return counts


@njit(nogil=True, cache=True, inline="always")
def slot_of(recent: np.ndarray, filled: int, item: int) -> int:
    """Where ``item`` is in the move-to-front list ``recent[:filled]`` (newest first), else ``filled``."""
    j = 0
    while j < filled and recent[j] != item:
        j += 1
    return j


@njit(nogil=True, cache=True, inline="always")
def move_to_front(recent: np.ndarray, filled: int, j: int, item: int) -> int:
    """Put ``item`` (found at slot ``j``, or ``filled`` where absent) first in ``recent``,
    dropping the oldest where the list is full; returns the new fill."""
    grows = j == filled  # not in the list: it grows, up to its length
    j = min(j, len(recent) - 1, filled)  # the slot that frees up: the item's, else the oldest
    while j > 0:
        recent[j] = recent[j - 1]
        j -= 1
    recent[0] = item
    return min(filled + 1, len(recent)) if grows else filled


def mix_repeats(
    logits: torch.Tensor,
    rows: np.ndarray,
    items: np.ndarray,
    mixture: RepeatMixture,
    signals: np.ndarray | None = None,
) -> torch.Tensor:
    """Set the logits of each row's history ``items`` (pairs ``rows``, ``items``; rows
    ascending, items oldest first; the events' ``signals`` where known) so that the row's
    softmax is the repeat / explore mixture above, in place. Items at -inf stay there unless
    ``mixture`` revives them; rows without history are left alone."""
    if len(rows):  # (no history: nothing to mix, and no normaliser to compute for it)
        mix_repeats_with_log_z(logits, rows, items, mixture, signals)
    return logits


def mix_repeats_with_log_z(
    logits: torch.Tensor,
    rows: np.ndarray,
    items: np.ndarray,
    mixture: RepeatMixture,
    signals: np.ndarray | None = None,
) -> torch.Tensor | None:
    """:func:`mix_repeats`, returning the [n, 1] log-normaliser of the mixed rows, which
    follows from the raw one: the explore items keep their logits, so Z' = Z (1 - p) / (1 - r)
    with p = p(seen) before mixing (no second exp pass over the rows). None where some row's
    p(seen) is so close to 1 that 1 - p loses float precision (the caller sums the rows then)."""
    n, m = logits.shape
    log_z = row_log_z(logits)
    log_z = torch.where(torch.isfinite(log_z), log_z, torch.zeros_like(log_z))
    if not len(rows):
        return log_z[:, None]
    pairs = mixture.pairs(rows, items, signals)
    share = torch.from_numpy(mixture.row_shares(pairs, n)).to(logits.device)
    raw = logits[torch.from_numpy(pairs.rows), torch.from_numpy(pairs.items)].double().cpu()
    keep = revived(mixture, pairs.items) | torch.isfinite(raw).numpy()
    r_np, c_np, w = pairs.rows[keep], pairs.items[keep], pairs.weights[keep]
    r, c = torch.from_numpy(r_np).to(logits.device), torch.from_numpy(c_np).to(logits.device)
    p = torch.exp(raw[torch.from_numpy(keep)].to(logits.device) - log_z[r].double())
    p_true = torch.zeros(n, device=logits.device, dtype=torch.float64).index_add_(0, r, p)
    w_sum = np.bincount(r_np, weights=w, minlength=n)  # > 0 exactly in the rows with pairs (weights > 0)
    w = torch.from_numpy(w / np.maximum(w_sum, 1e-300)[r_np]).to(logits.device)
    mixed, log_z_mixed = _mixed_logits(p, w, r, p_true, log_z, share, mixture.weight)
    logits[r, c] = mixed.to(logits.dtype)
    mixing = torch.from_numpy(w_sum > 0).to(logits.device)
    log_z_mixed = torch.where(mixing, log_z_mixed, log_z.double())  # rows with nothing to mix keep theirs
    if bool((p_true > 1.0 - NORMALISER_MIN_UNSEEN).any()):
        return None
    return log_z_mixed.to(logits.dtype)[:, None]


def choose_recency_weight(
    mixture: RepeatMixture, score_each: Callable[[list[RepeatMixture | None]], list[float]]
) -> tuple[float | None, list[float]]:
    """(the weight of :data:`RECENCY_WEIGHTS` whose mixture ``score_each`` scores highest, the
    lowest among equals, or None where the scores unmixed beat every mixture; the scores of
    each weight, then unmixed)."""
    candidates: list[RepeatMixture | None] = [replace(mixture, recency_weight=w) for w in RECENCY_WEIGHTS]
    scores = [round(float(x), 5) for x in score_each([*candidates, None])]
    best = int(np.argmax(scores))
    return (RECENCY_WEIGHTS[best] if best < len(RECENCY_WEIGHTS) else None), scores


def revived(mixture: RepeatMixture, items: np.ndarray) -> np.ndarray:
    """[len(items)] True for the history items that join the repeat mode even at -inf:
    with recency in the mix, those the recipe may recommend at all."""
    if mixture.weight <= 0.0:
        return np.zeros(len(items), dtype=bool)
    return np.ones(len(items), dtype=bool) if mixture.revivable is None else mixture.revivable[items]


def _mixed_logits(
    p: torch.Tensor,
    w: torch.Tensor,
    r: torch.Tensor,
    p_true: torch.Tensor,
    log_z: torch.Tensor,
    share: torch.Tensor,
    recency_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the history pairs' mixed logits, each row's mixed log-normaliser) from the pairs' raw
    probabilities ``p``, normalised recency shares ``w`` and rows ``r``, and each row's
    repeat ``share`` (float64)."""
    p_seen = p_true.clamp(*P_SEEN_RANGE)
    weight = torch.where(p_true > 0, recency_weight, 1.0)  # nothing the model can score: recency alone
    log_z_mixed = log_z.double() + torch.log1p(-p_seen) - torch.log1p(-share)
    within = weight[r] * w + (1.0 - weight[r]) * p / p_seen[r]
    return torch.log(share[r] * within) + log_z_mixed[r], log_z_mixed


def row_log_z(logits: torch.Tensor) -> torch.Tensor:
    """[n] log-sum-exp of each row of ``logits`` (untouched). On a CPU numpy's exp in place
    on a copy in a scratch buffer kept per thread (a fresh [n, m] array would cost page
    faults every block): about 0.7x the time of ``torch.logsumexp``."""
    if logits.device.type != "cpu":
        return torch.logsumexp(logits, dim=1)
    top = logits.amax(dim=1, keepdim=True)
    top.masked_fill_(~torch.isfinite(top), 0.0)  # rows all -inf stay -inf below
    values, shift = logits.numpy(), top.numpy()
    scratch = getattr(_SCRATCH, "values", None)
    if scratch is None or scratch.size < values.size:
        scratch = _SCRATCH.values = np.empty(values.size, dtype=np.float32)
    work = scratch[: values.size].reshape(values.shape)
    np.subtract(values, shift, out=work)
    np.exp(work, out=work)
    return torch.from_numpy(work).sum(dim=1).log_().add_(top[:, 0])


__all__ = [
    "REPEAT_AWARE_HP",
    "REPEAT_HPS",
    "RECENCY_AUTO",
    "RECENCY_FALLBACK",
    "RECENCY_WEIGHTS",
    "REPEAT_RECENCY_HP",
    "HistoryPairs",
    "RepeatHistory",
    "RepeatMixture",
    "choose_recency_weight",
    "history_pairs",
    "mix_repeats",
    "mix_repeats_with_log_z",
    "recency_shares",
    "repeat_counts",
    "repeat_share",
    "revived",
    "row_log_z",
]
