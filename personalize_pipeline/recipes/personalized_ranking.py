"""aws-personalized-ranking: the HRNN model, used to reorder a given list of items per user.

Input per request: a user and up to 500 ITEM_IDs. Known items are ranked by the user's
HRNN logits; scores are the softmax over the ranked items of the list (they sum to 1 over
the list). Items the model does not know (not in the catalogue, or never seen in training)
are appended at the end in their input order, without a score — as Personalize does.
"""

from __future__ import annotations

import numpy as np

from .base import UserBatch
from .hrnn import GRURecipe
from .interfaces import Ranker


class PersonalizedRanking(GRURecipe, Ranker):
    name = "aws-personalized-ranking"
    description = "Reorders a given item list for a user with the HRNN model."

    def rank(self, batch: UserBatch, lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return rank_by_logits(self.logits(batch), lists)


def rank_by_logits(logits: np.ndarray, lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row of ``lists`` ([n, L] item codes, -1 for unknown items and padding) ranked by
    its user's ``logits`` ([n, n_items], -inf for items never trained on).

    Returns (order [n, L] column positions into ``lists``, best first, unknown items
    last in input order; scores [n, L] float32, NaN for unscored positions)."""
    n, width = lists.shape
    known = lists >= 0
    gathered = np.where(known, np.take_along_axis(logits, np.maximum(lists, 0), axis=1), -np.inf)
    scored = np.isfinite(gathered)
    # sort: scored items by logit desc, then unscored by input position
    key_primary = np.where(scored, -gathered, np.inf)
    position = np.broadcast_to(np.arange(width), (n, width))
    order = np.lexsort((position, key_primary), axis=1)
    sorted_logits = np.take_along_axis(gathered, order, axis=1)
    sorted_scored = np.take_along_axis(scored, order, axis=1)
    m = np.max(np.where(sorted_scored, sorted_logits, -np.inf), axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(sorted_scored, np.exp(sorted_logits - m), 0.0)
    z = e.sum(axis=1, keepdims=True)
    scores = np.where(sorted_scored, e / np.maximum(z, 1e-30), np.nan).astype(np.float32)
    return order, scores


__all__ = ["PersonalizedRanking", "rank_by_logits"]
