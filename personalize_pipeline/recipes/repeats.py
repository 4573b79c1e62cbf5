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
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from .base import HyperParameter

P_SEEN_RANGE = (1e-12, 1.0 - 1e-6)  # p(seen) clamped: no division by 0, no log of 0
# the hyperparameter of every recipe that mixes (default on)
REPEAT_AWARE_HP = HyperParameter(
    "repeat_aware",
    bool,
    True,
    help="mix the scores with the share of events that repeat one of the user's items (RepeatNet's repeat / "
    "explore modes; see recipes/repeats.py)",
)
NORMALISER_MIN_UNSEEN = 1e-3  # 1 - p(seen) below this: the mixed normaliser is summed, not derived
_SCRATCH = threading.local()  # row_log_z's work buffer, per thread


def repeat_share(indptr: np.ndarray, items: np.ndarray, n_items: int) -> float:
    """The smoothed share of transitions (an event after the user's first) whose item the
    user already had; vectorised (one in-place sort of (user, item) keys)."""
    lengths = np.diff(indptr)
    transitions = int(np.maximum(lengths - 1, 0).sum())
    keys = np.repeat(np.arange(len(lengths), dtype=np.int64) * max(int(n_items), 1), lengths)
    keys += items  # one (user, item) key per event, sorted in place: no copies of 10M-event arrays
    keys.sort()
    first_times = int(np.count_nonzero(keys[1:] != keys[:-1])) + int(len(keys) > 0)
    repeats = len(items) - first_times
    return (repeats + 0.5) / (transitions + 1.0)


def mix_repeats(logits: torch.Tensor, rows: np.ndarray, items: np.ndarray, share: float) -> torch.Tensor:
    """Shift the logits of each row's history ``items`` (pairs ``rows``, ``items``; repeated
    pairs count once) so that the row's softmax is the repeat / explore mixture above, in
    place. Items at -inf stay there; rows without history are left alone."""
    if len(rows):  # (no history: nothing to mix, and no normaliser to compute for it)
        mix_repeats_with_log_z(logits, rows, items, share)
    return logits


def mix_repeats_with_log_z(
    logits: torch.Tensor, rows: np.ndarray, items: np.ndarray, share: float
) -> torch.Tensor | None:
    """:func:`mix_repeats`, returning the [n, 1] log-normaliser of the mixed rows, which
    follows from the raw one: Z' = Z (1 - p + p e^delta) with p = p(seen) before the shift
    and delta the shift (no second exp pass over the rows). None where some row's p(seen)
    is so close to 1 that 1 - p loses float precision (the caller sums the rows then)."""
    n, m = logits.shape
    log_z = row_log_z(logits)
    log_z = torch.where(torch.isfinite(log_z), log_z, torch.zeros_like(log_z))
    if not len(rows):
        return log_z[:, None]
    pairs = np.unique(np.asarray(rows, dtype=np.int64) * m + np.asarray(items, dtype=np.int64))
    r, c = (torch.from_numpy(a).to(logits.device) for a in np.divmod(pairs, m))
    p_true = torch.zeros(n, device=logits.device, dtype=torch.float64)
    p_true.index_add_(0, r, torch.exp(logits[r, c].double() - log_z[r].double()))
    p_seen = p_true.clamp(*P_SEEN_RANGE).to(logits.dtype)
    delta = np.log(share) - np.log1p(-share) - torch.log(p_seen) + torch.log1p(-p_seen)
    logits[r, c] += delta[r]
    if bool((p_true > 1.0 - NORMALISER_MIN_UNSEEN).any()):
        return None
    factor = (1.0 - p_true) + p_true * torch.exp(delta.double())
    return (log_z.double() + torch.log(factor)).to(logits.dtype)[:, None]


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


__all__ = ["REPEAT_AWARE_HP", "mix_repeats", "mix_repeats_with_log_z", "repeat_share", "row_log_z"]
