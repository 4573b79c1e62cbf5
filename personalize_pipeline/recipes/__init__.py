"""Recipe registry: Personalize recipe names (or ARNs) to recipe classes."""

from __future__ import annotations

from ..errors import InputError
from .base import HyperParameter, Recipe, UserBatch, top_k
from .hrnn import HRNN
from .hrnn_coldstart import HRNNColdstart
from .hrnn_metadata import HRNNMetadata
from .interfaces import (
    INTERFACES,
    Ranker,
    RelatedItemsRecipe,
    UserRecommender,
    UserSegmenter,
    explores,
    interface_of,
)
from .item_affinity import ItemAffinity, ItemAttributeAffinity
from .personalized_ranking import PersonalizedRanking
from .personalized_ranking_v2 import PersonalizedRankingV2
from .popularity_count import PopularityCount
from .similar_items import SimilarItems
from .sims import SIMS
from .trending_now import TrendingNow
from .user_personalization import ExplorationConfig, UserPersonalization
from .user_personalization_v2 import UserPersonalizationV2

RECIPES: dict[str, type[Recipe]] = {
    cls.name: cls
    for cls in (
        UserPersonalization,
        UserPersonalizationV2,
        PopularityCount,
        HRNN,
        HRNNMetadata,
        HRNNColdstart,
        PersonalizedRanking,
        PersonalizedRankingV2,
        SIMS,
        SimilarItems,
        TrendingNow,
        ItemAffinity,
        ItemAttributeAffinity,
    )
}

ARN_PREFIX = "arn:aws:personalize:::recipe/"


def recipe_name(name_or_arn: str) -> str:
    name = (name_or_arn or "").strip()
    if name.startswith(ARN_PREFIX):
        name = name[len(ARN_PREFIX) :]
    return name


def get_recipe(name_or_arn: str) -> type[Recipe]:
    name = recipe_name(name_or_arn)
    if name in RECIPES:
        return RECIPES[name]
    raise InputError(f"unknown recipe {name_or_arn!r} (available: {', '.join(RECIPES)})")


__all__ = [
    "explores",
    "HyperParameter",
    "Recipe",
    "UserRecommender",
    "Ranker",
    "RelatedItemsRecipe",
    "UserSegmenter",
    "INTERFACES",
    "interface_of",
    "UserBatch",
    "top_k",
    "get_recipe",
    "recipe_name",
    "RECIPES",
    "HRNN",
    "HRNNMetadata",
    "PersonalizedRanking",
    "HRNNColdstart",
    "ItemAffinity",
    "ItemAttributeAffinity",
    "PopularityCount",
    "SIMS",
    "SimilarItems",
    "TrendingNow",
    "UserPersonalization",
    "ExplorationConfig",
    "UserPersonalizationV2",
    "PersonalizedRankingV2",
]
