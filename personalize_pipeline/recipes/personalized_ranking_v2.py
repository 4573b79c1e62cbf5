"""aws-personalized-ranking-v2: the aws-user-personalization-v2 transformer, used to reorder
a given list of items per user (at most 500), as Personalize's Personalized-Ranking-v2.

Known items are ranked by the user's logits; scores are the softmax over the ranked items
of the list (they sum to 1 over the list). Items the model does not know (not in the
catalogue, or never seen in training) are appended last in their input order, without a
score, as for aws-personalized-ranking.
"""

from __future__ import annotations

from .personalized_ranking import PersonalizedRanking
from .user_personalization_v2 import UserPersonalizationV2


class PersonalizedRankingV2(UserPersonalizationV2):
    name = "aws-personalized-ranking-v2"
    recipe_type = "PERSONALIZED_RANKING"
    description = "Reorders a given item list for a user with the aws-user-personalization-v2 transformer."

    # the same ranking of a list by the model's logits as aws-personalized-ranking
    rank = PersonalizedRanking.rank


__all__ = ["PersonalizedRankingV2"]
