"""aws-popularity-count: items ranked by how many distinct users interacted with them.

Amazon Personalize defines the recipe's popularity as a count of events per item; as the
design asks, the count is of *unique users* per item (a user who clicks an item ten times
counts once), with ties broken by the total number of events and then by ITEM_ID (string
order), so rankings are deterministic. Scores are each item's share of the total count, so
they sum to 1 over the catalogue like Personalize's USER_PERSONALIZATION scores.

UPDATE recounts on the current data (cheap: one pass over the interactions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..features import Features
from .base import UserBatch, masked_top_k
from .interfaces import UserRecommender

if TYPE_CHECKING:
    import torch

    from .user_personalization import ExplorationConfig


class PopularityCount(UserRecommender):
    name = "aws-popularity-count"
    hyperparameters = ()
    description = "Most popular items (unique users per item); the baseline for every other recipe."
    uses_impressions = False  # counts interactions only: featurization keeps no impression lists

    def fit(self, features: Features, seed: int = 42) -> PopularityCount:
        inter = features.interactions
        items = inter["item"].to_numpy()
        n_items = features.n_items
        events = np.bincount(items, minlength=n_items)
        # unique (user, item) pairs without a Python loop: one int64 key per event, sorted
        # in place (np.unique would hold several copies of the 10M-event keys at once)
        pairs = inter["user"].to_numpy().astype(np.int64)
        pairs *= n_items
        pairs += items
        pairs.sort()
        first = np.empty(len(pairs), dtype=bool)
        first[:1] = True
        np.not_equal(pairs[1:], pairs[:-1], out=first[1:])
        unique_users = np.bincount(pairs[first] % n_items, minlength=n_items)
        self._set_state({"unique_users": unique_users.astype(np.int64), "events": events.astype(np.int64)})
        self.fitted = True
        self._stats = {"events": int(len(items)), "items_with_events": int((events > 0).sum())}
        return self

    def training_stats(self) -> dict[str, Any]:
        return dict(getattr(self, "_stats", {}))

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.unique_users = np.asarray(state["unique_users"], dtype=np.int64)
        self.events = np.asarray(state["events"], dtype=np.int64)
        self.n_items = len(self.unique_users)
        # global ranking: unique users desc, events desc, item code asc (= ITEM_ID order)
        self.order = np.lexsort((np.arange(self.n_items), -self.events, -self.unique_users))
        total = max(int(self.unique_users.sum()), 1)
        self.scores = (self.unique_users / total).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"unique_users": self.unique_users, "events": self.events}

    def score(self, batch: UserBatch) -> np.ndarray:
        self._check_fitted()
        return np.broadcast_to(self.scores, (len(batch), self.n_items))

    def _recommend(
        self,
        batch: UserBatch,
        k: int,
        exclude_seen: bool = False,
        allowed: np.ndarray | None = None,
        *,
        exploration: ExplorationConfig | None = None,
        device: torch.device | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Same ranked list for everyone; with ``exclude_seen`` each user's seen items are
        skipped (vectorised: take enough candidates from the global order, mask, compact).
        With an ``allowed`` mask (filters) the generic masked top-k is used."""
        self._check_fitted()
        if allowed is not None:
            return masked_top_k(self.score(batch), batch, k, exclude_seen, allowed)
        n = len(batch)
        k = min(k, self.n_items)
        if not exclude_seen:
            top = self.order[:k]
            return np.broadcast_to(top, (n, k)).copy(), np.broadcast_to(self.scores[top], (n, k)).copy()
        lengths = np.diff(batch.history_indptr)
        width = min(self.n_items, k + int(lengths.max(initial=0)))
        candidates = np.broadcast_to(self.order[:width], (n, width))
        rank_of = np.full(self.n_items, width, dtype=np.int64)
        rank_of[self.order[:width]] = np.arange(width)
        rows, cols = batch.seen_mask_rows_cols()
        ranks = rank_of[cols]
        keep = np.ones((n, width + 1), dtype=bool)
        keep[rows, ranks] = False  # rank == width lands in the spare column
        keep = keep[:, :width]
        # stable compaction: kept candidates first, in rank order
        pos = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        items = np.take_along_axis(candidates, pos, 1)
        valid = np.take_along_axis(keep, pos, 1)
        items = np.where(valid, items, -1)
        scores = np.where(valid, self.scores[np.maximum(items, 0)], -np.inf).astype(np.float32)
        return items, scores
