"""aws-personalized-ranking-v2: the aws-user-personalization-v2 transformer, used to reorder
a given list of items per user (at most 500), as Personalize's Personalized-Ranking-v2.

Known items are ranked by the user's logits; scores are the softmax over the ranked items
of the list (they sum to 1 over the list). Items the model does not know (not in the
catalogue, or never seen in training) are appended last in their input order, without a
score, as for aws-personalized-ranking.
"""

from __future__ import annotations

import numpy as np

from .base import UserBatch
from .interfaces import Ranker
from .personalized_ranking import rank_by_logits
from .user_personalization_v2 import SASRecRecipe


class PersonalizedRankingV2(SASRecRecipe, Ranker):
    name = "aws-personalized-ranking-v2"
    description = "Reorders a given item list for a user with the aws-user-personalization-v2 transformer."

    def rank(self, batch: UserBatch, lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # the same ranking of a list by the model's logits as aws-personalized-ranking
        return rank_by_logits(self.logits(batch), lists)


__all__ = ["PersonalizedRankingV2"]
