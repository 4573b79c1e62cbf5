"""What a trained sequence model keeps besides its network, declared in one place.

The GRU family (aws-hrnn and its variants, aws-user-personalization, aws-personalized-ranking)
and the transformer (aws-user-personalization-v2, aws-personalized-ranking-v2) learn the same
side information next to their weights; :class:`FitState` holds it, and its arrays are what
the solution version saves (the keys are the ones versions have always been saved with, so
older versions load unchanged). A recipe's own extras (metadata layouts, exploration
counts) stay with the recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .repeat_head import RepeatHead, fit_repeat_head
from .repeats import (
    RECENCY_AUTO,
    RECENCY_FALLBACK,
    RECENCY_WEIGHTS,
    RepeatMixture,
    choose_recency_weight,
    recency_shares,
    repeat_counts,
    repeat_share,
)


@dataclass
class FitState:
    # interactions per item in the training data (the sampler's popularity; users without
    # history are scored by it)
    popularity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # items the network trained a vector for (the others are never recommended)
    trained: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # newest event time of the training data (an UPDATE trains on what came after it)
    latest_time: float | None = None
    # each user's state after their whole stored history (batch inference looks it up)
    user_state: np.ndarray | None = None
    # the history length each cached state was computed from (an UPDATE recomputes changed ones)
    user_history_length: np.ndarray | None = None
    # share of training transitions that repeat a user's item (the repeat mixture); None:
    # a version saved before it existed
    repeat_share: float | None = None
    # share of those repeats that came back to the user's newest, second newest, ... item;
    # None: a version saved before it existed (the mixture then orders by the model alone)
    repeat_recency: np.ndarray | None = None
    # the weight of recency chosen on held-out newest events (repeat_recency auto); None: not
    # chosen (no held-out events, or a version saved before)
    repeat_recency_weight: float | None = None
    # True: the held-out newest events ranked better without the repeat mixture (repeat_recency
    # auto), so the scores are not mixed
    repeat_unmixed: bool = False
    # who comes back to which item, from event types and times (recipes/repeat_head.py; the
    # v2 recipes); None: the share and recency shares above for every user
    repeat_head: RepeatHead | None = None

    def reset_repeat_choice(self) -> None:
        """Forget what an earlier FULL training chose (a new one chooses again)."""
        self.repeat_recency_weight, self.repeat_unmixed = None, False

    def measure_repeats(self, indptr: np.ndarray, items: np.ndarray, signals: np.ndarray | None = None) -> None:
        """The repeat share and recency shares of the training sequences (CSR), from one
        count of their repeats, and the repeat head fit on them where the events' ``signals``
        are given."""
        counts = repeat_counts(indptr, items)
        self.repeat_share = repeat_share(indptr, counts)
        self.repeat_recency = recency_shares(counts)
        self.repeat_head = fit_repeat_head(indptr, items, signals) if signals is not None else None

    def repeat_mixture(self, params: dict, revivable: np.ndarray | None = None) -> RepeatMixture | None:
        """How the scores are mixed (:mod:`.repeats`) under the recipe's ``params``; None
        when ``repeat_aware`` is off or the version has no repeat share."""
        if not params.get("repeat_aware") or self.repeat_share is None:
            return None
        weight = float(params.get("repeat_recency", RECENCY_AUTO))
        if weight < 0 and self.repeat_unmixed:
            return None
        if weight < 0:
            weight = self.repeat_recency_weight if self.repeat_recency_weight is not None else RECENCY_FALLBACK
        return RepeatMixture(self.repeat_share, self.repeat_recency, weight, revivable, self.repeat_head)

    def choose_recency_weight(
        self,
        params: dict,
        revivable: np.ndarray | None,
        score_each: Callable[[list[RepeatMixture | None]], list[float]],
    ) -> dict[str, object]:
        """After a FULL training with held-out newest events: with ``repeat_recency`` auto,
        the recency weight that ranks them best, or no mixing where they rank better unmixed
        (``score_each``: their NDCG@10 under each mixture, None = unmixed). Returns the
        report's entries."""
        mixture = self.repeat_mixture(params, revivable)
        if mixture is None or mixture.recency is None or params["repeat_recency"] >= 0:
            return {}
        weight, scores = choose_recency_weight(mixture, score_each)
        self.repeat_recency_weight, self.repeat_unmixed = weight, weight is None
        return {
            "repeat_recency_chosen": "unmixed" if weight is None else weight,
            "held_out_ndcg10_by_repeat_recency": dict(
                zip([*map(str, RECENCY_WEIGHTS), "unmixed"], scores, strict=True)
            ),
        }

    def repeat_stats(self) -> dict[str, float | str]:
        """The repeat share, the share of repeats of the user's newest item and the head, for reports."""
        out: dict[str, float | str] = {} if self.repeat_share is None else {"repeat_share": round(self.repeat_share, 6)}
        if self.repeat_recency is not None:
            out["repeats_of_the_newest_item"] = round(float(self.repeat_recency[0]), 4)
        if self.repeat_head is not None:
            out["repeat_head"] = "per user, from event types and times (recipes/repeat_head.py)"
        return out

    @property
    def n_items(self) -> int:
        return len(self.popularity)

    def arrays(self) -> dict[str, np.ndarray]:
        """The fields as the arrays saved in a solution version (unset ones left out)."""
        out = {"popularity": self.popularity, "trained": self.trained}
        if self.latest_time is not None:
            out["latest_time"] = np.array(self.latest_time)
        if self.user_state is not None:
            out["user_state"] = self.user_state
        if self.user_history_length is not None:
            out["user_history_length"] = self.user_history_length
        if self.repeat_share is not None:
            out["repeat_share"] = np.array(self.repeat_share)
        if self.repeat_recency is not None:
            out["repeat_recency"] = self.repeat_recency
        if self.repeat_recency_weight is not None:
            out["repeat_recency_weight"] = np.array(self.repeat_recency_weight)
        if self.repeat_unmixed:
            out["repeat_unmixed"] = np.array(True)
        if self.repeat_head is not None:
            out.update(self.repeat_head.arrays())
        return out

    @classmethod
    def read(cls, state: dict[str, np.ndarray]) -> FitState:
        """The fields back from a saved version's arrays (older versions lack some)."""
        return cls(
            popularity=np.asarray(state["popularity"], dtype=np.float64),
            trained=np.asarray(state["trained"], dtype=bool),
            latest_time=float(state["latest_time"]) if "latest_time" in state else None,
            user_state=np.asarray(state["user_state"], dtype=np.float32) if "user_state" in state else None,
            user_history_length=(np.asarray(state["user_history_length"]) if "user_history_length" in state else None),
            repeat_share=float(state["repeat_share"]) if "repeat_share" in state else None,
            repeat_recency=np.asarray(state["repeat_recency"], dtype=np.float64) if "repeat_recency" in state else None,
            repeat_recency_weight=(float(state["repeat_recency_weight"]) if "repeat_recency_weight" in state else None),
            repeat_unmixed=bool(state["repeat_unmixed"]) if "repeat_unmixed" in state else False,
            repeat_head=RepeatHead.read(state),
        )


__all__ = ["FitState"]
