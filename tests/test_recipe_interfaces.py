"""One declared interface per recipe type, one batch handler per recipe type."""

import inspect
import json

import numpy as np
import pytest

from personalize_pipeline.batch import HANDLERS
from personalize_pipeline.batch_requests import RankingRequest, UserRequest, parse_line
from personalize_pipeline.recipes import (
    INTERFACES,
    RECIPES,
    Ranker,
    RelatedItemsRecipe,
    UserRecommender,
    UserSegmenter,
    interface_of,
)
from personalize_pipeline.recipes.base import RECIPE_TYPES
from personalize_pipeline.recipes.hrnn import GRURecipe

EXPECTED = {
    "aws-user-personalization": UserRecommender,
    "aws-user-personalization-v2": UserRecommender,
    "aws-popularity-count": UserRecommender,
    "aws-hrnn": UserRecommender,
    "aws-hrnn-metadata": UserRecommender,
    "aws-hrnn-coldstart": UserRecommender,
    "aws-trending-now": UserRecommender,
    "aws-personalized-ranking": Ranker,
    "aws-personalized-ranking-v2": Ranker,
    "aws-sims": RelatedItemsRecipe,
    "aws-similar-items": RelatedItemsRecipe,
    "aws-item-affinity": UserSegmenter,
    "aws-item-attribute-affinity": UserSegmenter,
}


def test_every_recipe_implements_exactly_its_types_interface():
    assert set(RECIPES) == set(EXPECTED)
    assert set(INTERFACES) == set(RECIPE_TYPES)
    for name, cls in RECIPES.items():
        assert interface_of(cls) is EXPECTED[name], name
        assert INTERFACES[cls.recipe_type] is EXPECTED[name], name
        assert not inspect.isabstract(cls), name
    # the ranking recipes share the user-recommendation models, not their interface
    assert not issubclass(RECIPES["aws-personalized-ranking"], UserRecommender)
    assert not issubclass(RECIPES["aws-personalized-ranking-v2"], UserRecommender)
    assert [n for n, c in RECIPES.items() if issubclass(c, UserRecommender) and c.supports_exploration] == [
        "aws-user-personalization"
    ]
    # every user recommender is called through the interface's recommend, which checks exploration once
    for name, cls in RECIPES.items():
        if issubclass(cls, UserRecommender):
            assert cls.recommend is UserRecommender.recommend, name


def test_an_interface_method_left_out_cannot_be_instantiated():
    class Unranked(GRURecipe, Ranker):
        name = "unranked"

    with pytest.raises(TypeError, match="rank"):
        Unranked()


def test_recipes_that_do_not_explore_refuse_an_exploration_config():
    from personalize_pipeline.errors import InputError
    from personalize_pipeline.recipes import ExplorationConfig, UserBatch

    model = RECIPES["aws-popularity-count"].from_state(
        {}, {"unique_users": np.array([3, 1]), "events": np.array([4, 1])}
    )
    batch = UserBatch.from_histories(np.array([0]), np.array([0, 0]), np.zeros(0, np.int32))
    assert model.recommend(batch, 2, exploration=None)[0].tolist() == [[0, 1]]
    with pytest.raises(InputError, match="itemExplorationConfig"):
        model.recommend(batch, 2, exploration=ExplorationConfig())


def test_one_batch_handler_per_recipe_type():
    assert set(HANDLERS) == set(RECIPE_TYPES)
    for recipe_type, handler in HANDLERS.items():
        assert handler.recipe_type == recipe_type and handler.interface is INTERFACES[recipe_type]
    assert HANDLERS["USER_SEGMENTATION"].max_results == 5_000_000
    assert HANDLERS["USER_PERSONALIZATION"].max_results == 500


def test_lines_parse_into_typed_requests():
    parsed = parse_line(json.dumps({"userId": 7}), 3, "USER_PERSONALIZATION")
    assert parsed.error is None and parsed.request == UserRequest(3, {"userId": 7}, "7")
    parsed = parse_line(json.dumps({"userId": "u", "itemList": ["a", 2]}), 4, "PERSONALIZED_RANKING")
    assert parsed.request == RankingRequest(4, {"userId": "u", "itemList": ["a", 2]}, "u", ("a", "2"))
    with pytest.raises(AttributeError):
        parsed.request.user_id = "other"  # requests are frozen
    obj, request, error = parse_line("[1]", 5, "RELATED_ITEMS")
    assert obj is None and request is None and error == "line 5: expected a JSON object"
