"""Early stopping on held-out newest events, as one named unit of the neural training core.

How many passes a sequence model needs differs by an order of magnitude between datasets
(a dense MovieLens history against sparse review data with a large catalogue), and past the
best pass the test metric falls again (the model overfits the few events of sparse users).
A fixed number of epochs is therefore wrong somewhere; the usual remedy in the literature
(RecBole's ``stopping_step``, SASRec+ and gSASRec's validation-based stopping) is to watch a
held-out split and keep the best weights.

The split here is the leave-last-out protocol applied once more inside the training data: a
random sample of users (``share`` of those with at least two training transitions, at least
``SMALL_DATA_USERS`` of them, all on small data, at most ``cap``) lose their newest
transition as a training target; after each epoch the model ranks the whole catalogue for
them and the NDCG@10 of the held-out item is the score, repeat-mixed with each user's
history as the recipes serve (:mod:`.repeats`). Users keep that event as input history (it
is part of their state at inference time); only the prediction of it is not trained, which
costs one training target per held-out user.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .base import segment_index
from .repeats import RepeatHistory, RepeatMixture, mix_repeats

MIN_HELD_OUT_USERS = 200  # fewer than this: the score is too noisy to stop on; train all epochs
# up to this many eligible users are all held out, whatever the share: on small data (ML-100k's
# 943 users) a share leaves too few to stop on, and each loses one target of many
SMALL_DATA_USERS = 1000


def held_out_count(eligible: int, share: float, cap: int) -> int:
    """How many of ``eligible`` users to hold out: ``share`` of them, at least
    ``SMALL_DATA_USERS`` (all of them on small data), at most ``cap``; 0 when fewer than
    ``MIN_HELD_OUT_USERS`` would be."""
    n = min(max(int(round(share * eligible)), min(eligible, SMALL_DATA_USERS)), cap)
    return n if n >= MIN_HELD_OUT_USERS else 0


def events_before(
    indptr: np.ndarray, items: np.ndarray, positions: np.ndarray, signals: np.ndarray | None = None
) -> RepeatHistory:
    """(row, item) pairs of the events before ``positions[row]`` (positions in ``items``)
    of that event's user (``indptr`` delimits the users), and their ``signals`` (per event
    of ``items``; None stays None), vectorised."""
    positions = np.asarray(positions, dtype=np.int64)
    starts = indptr[np.searchsorted(indptr, positions, side="right") - 1]
    ptr, index = segment_index(starts, positions - starts)
    rows = np.repeat(np.arange(len(positions)), np.diff(ptr))
    return rows, items[index], None if signals is None else signals[index]


@dataclass
class HeldOutNewest:
    """The held-out newest transition of a sample of users: [n, T] input windows ending just
    before the held-out event (left-padded), the [n] held-out item codes and, where known,
    (row, item) pairs of each user's whole history before it and their events' signals (the
    repeat mixture of the score needs what the user had, not only the window)."""

    windows: np.ndarray
    targets: np.ndarray
    history: RepeatHistory | None = None

    @classmethod
    def take(
        cls,
        inputs: np.ndarray,
        targets: np.ndarray,
        newest: np.ndarray,
        pad: int,
        share: float,
        cap: int,
        rng: np.random.Generator,
        steps: int = 1,
        sequences: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        signals: np.ndarray | None = None,
    ) -> tuple[HeldOutNewest | None, np.ndarray, np.ndarray]:
        """Hold out the last target of a sample of the ``newest`` windows (one per user, as
        :func:`.sasrec.end_aligned_windows` builds them), and ``steps - 1`` more before it
        from training. Returns (the held-out set or None when too few users qualify,
        training inputs, training targets): the sampled windows are shifted right by
        ``steps`` so that they still end at a real target. With ``steps`` 2 the event before
        the held-out one is in its input but never trained on, as the leave-last-out
        protocol's validation event is for its test event (it tracked amazon-beauty's test
        curve worse than 1 and cost training events: bench/README.md, session 10).
        ``sequences``: (indptr, items, each window's last target's position in items), from
        which the held-out users' histories are taken (with the events' ``signals``). A user
        qualifies with more than ``steps`` events in the window (overlapping windows own
        fewer targets than that; a shifted window may then be left without one)."""
        eligible = np.flatnonzero(newest & ((inputs != pad).sum(axis=1) > steps))
        n = held_out_count(len(eligible), share, cap)
        if not n:
            return None, inputs, targets
        rows = np.sort(rng.choice(eligible, size=n, replace=False))
        history = None
        if sequences is not None:
            history = events_before(sequences[0], sequences[1], sequences[2][rows], signals)
        held = cls(windows=inputs[rows].copy(), targets=targets[rows, -1].copy(), history=history)
        inputs, targets = inputs.copy(), targets.copy()
        inputs[rows, steps:], inputs[rows, :steps] = inputs[rows, :-steps], pad
        targets[rows, steps:], targets[rows, :steps] = targets[rows, :-steps], -1
        return held, inputs, targets

    def ndcg_at_10(
        self,
        encode: Callable[[np.ndarray], torch.Tensor],
        item_vectors: torch.Tensor,
        item_bias: torch.Tensor | None = None,
        repeats: RepeatMixture | None = None,
    ) -> float:
        """Mean NDCG@10 of the held-out items ranked over the whole catalogue; ``encode`` maps
        [n, T] windows to [n, d] states; ``item_bias`` ([n_items], -inf = never ranked) is
        added to the logits where the model has one. ``repeats``: the logits are mixed
        with the user's history (:attr:`history`, else the window's items) as the recipe
        mixes them when it recommends (:mod:`.repeats`), so that the score is that of what
        would be served."""
        return self.ndcg_at_10_each(encode, item_vectors, item_bias, [repeats])[0]

    def ndcg_at_10_each(
        self,
        encode: Callable[[np.ndarray], torch.Tensor],
        item_vectors: torch.Tensor,
        item_bias: torch.Tensor | None,
        mixtures: Sequence[RepeatMixture | None],
    ) -> list[float]:
        """:meth:`ndcg_at_10` under each of ``mixtures``, from one pass of states and logits."""
        states = encode(self.windows).float()
        n_items = item_vectors.shape[0]
        gains: list[list[torch.Tensor]] = [[] for _ in mixtures]
        for lo in range(0, len(states), 1024):  # [1024, n_items] logits at a time
            raw = states[lo : lo + 1024] @ item_vectors.float().T
            if item_bias is not None:
                raw = raw + item_bias.float()
            targets = torch.from_numpy(self.targets[lo : lo + 1024])[:, None]
            history = self._history_of(lo, min(lo + 1024, len(states)), n_items)
            for mixture, gain in zip(mixtures, gains, strict=True):
                logits = raw.clone() if len(mixtures) > 1 else raw
                if mixture is not None:
                    mix_repeats(logits, *history[:2], mixture, history[2])
                rank = (logits > logits.gather(1, targets)).sum(dim=1).float()
                gain.append(torch.where(rank < 10, 1.0 / torch.log2(rank + 2.0), 0.0))
        return [float(torch.cat(gain).mean()) for gain in gains]

    def _history_of(self, lo: int, hi: int, n_items: int) -> RepeatHistory:
        """(row - lo, item) history pairs of the held-out rows lo..hi, and their signals."""
        if self.history is None:
            window = self.windows[lo:hi]
            rows, cols = np.nonzero(window < n_items)
            return rows, window[rows, cols], None
        rows, items, signals = self.history
        a, b = np.searchsorted(rows, [lo, hi])
        return rows[a:b] - lo, items[a:b], None if signals is None else signals[a:b]


class EarlyStopping:
    """Keeps the weights of the best score seen; ``observe`` says when ``patience`` epochs in
    a row brought no improvement. ``patience`` 0 never stops (and keeps nothing)."""

    def __init__(self, patience: int):
        self.patience = int(patience)
        self.best_score = -np.inf
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.scores: list[float] = []

    def observe(self, epoch: int, score: float, state: Callable[[], dict[str, torch.Tensor]]) -> bool:
        """Record the score after ``epoch``; True when training should stop."""
        self.scores.append(round(float(score), 5))
        if score > self.best_score:
            self.best_score, self.best_epoch = float(score), int(epoch)
            self.best_state = {k: v.detach().clone() for k, v in state().items()}
        return self.patience > 0 and epoch - self.best_epoch >= self.patience


__all__ = ["EarlyStopping", "HeldOutNewest", "MIN_HELD_OUT_USERS", "events_before", "held_out_count"]
