"""One declared interface per Personalize recipe type: what a batch job asks of a recipe.

Every recipe shares :class:`~.base.Recipe` (hyperparameters, ``fit`` / ``update``, the
users × items ``score`` / ``recommend`` that offline evaluation calls, ``state``). On top of
it, each recipe class derives from exactly one of these abstract classes, which fixes its
``recipe_type`` and declares what batch inference serves from it:

- :class:`UserRecommender` (USER_PERSONALIZATION): top-k items per user, with the job's
  item exploration (``itemExplorationConfig``) and compute device;
- :class:`Ranker` (PERSONALIZED_RANKING): a given item list per user, reordered;
- :class:`RelatedItemsRecipe` (RELATED_ITEMS): items related to a given item;
- :class:`UserSegmenter` (USER_SEGMENTATION): the users most likely to interact with
  given items (batch segment jobs).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from .base import Recipe, UserBatch

if TYPE_CHECKING:
    import torch

    from .user_personalization import ExplorationConfig


SegmentInput = Literal["itemId", "itemAttributes"]


class UserRecommender(Recipe):
    """USER_PERSONALIZATION: ``recommend`` top-k items per user for batch jobs.

    ``recommend`` is the one entry point: it refuses an exploration config where the recipe
    does not declare ``supports_exploration``, then calls the recipe's ``_recommend``. A
    recipe class lists this interface before its model base (``HRNN(UserRecommender,
    GRURecipe)``) so that this ``recommend`` is the one callers get."""

    recipe_type: ClassVar[str] = "USER_PERSONALIZATION"
    # whether ``recommend`` takes an ``exploration`` config (Personalize's itemExplorationConfig)
    supports_exploration: ClassVar[bool] = False

    def recommend(
        self,
        batch: UserBatch,
        k: int,
        exclude_seen: bool = False,
        allowed: np.ndarray | None = None,
        *,
        exploration: ExplorationConfig | None = None,
        device: torch.device | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item codes and scores per user, best first: ([n, k] int64, [n, k] float32);
        -1 pads slots that cannot be filled. ``allowed`` ([n, n_items] bool, e.g. a filter)
        applies inside the top-k; ``exploration`` (only where ``supports_exploration``, an
        error elsewhere) gives some slots to young items; ``device`` is where tensor recipes
        compute (others ignore it)."""
        if exploration is not None and not self.supports_exploration:
            raise InputError(f"{self.name} does not take itemExplorationConfig (exploration weight / item age cut-off)")
        return self._recommend(batch, k, exclude_seen, allowed, exploration=exploration, device=device)

    @abstractmethod
    def _recommend(
        self,
        batch: UserBatch,
        k: int,
        exclude_seen: bool,
        allowed: np.ndarray | None,
        *,
        exploration: ExplorationConfig | None,
        device: torch.device | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``recommend`` of this recipe, the exploration config already checked (None unless
        the recipe ``supports_exploration``)."""


def explores(recipe: Recipe | type[Recipe]) -> bool:
    """Whether a recipe (class or instance) takes itemExplorationConfig."""
    cls = recipe if isinstance(recipe, type) else type(recipe)
    return issubclass(cls, UserRecommender) and cls.supports_exploration


class Ranker(Recipe):
    """PERSONALIZED_RANKING: ``rank`` reorders a given item list per user."""

    recipe_type: ClassVar[str] = "PERSONALIZED_RANKING"

    @abstractmethod
    def rank(self, batch: UserBatch, lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``lists``: [n, L] item codes, -1 for unknown items and padding. Returns (order
        [n, L] column positions into ``lists``, best first, unscored items last in input
        order; scores [n, L] float32, NaN for unscored positions)."""


class RelatedItemsRecipe(Recipe):
    """RELATED_ITEMS: ``related`` items per query item."""

    recipe_type: ClassVar[str] = "RELATED_ITEMS"

    @abstractmethod
    def related(
        self, item_codes: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Items related to each query item (code, -1 = unknown), best first:
        ([n, min(k, n_items)] int64, float32); the query item itself never comes back;
        ``allowed`` ([n, n_items] bool) applies before the list is cut; -1 pads."""


class UserSegmenter(Recipe):
    """USER_SEGMENTATION: ``segments`` of users per query (batch segment jobs)."""

    recipe_type: ClassVar[str] = "USER_SEGMENTATION"
    # what a batch segment job's input line names: one item, or an item attribute condition
    segment_input: ClassVar[SegmentInput]

    @abstractmethod
    def segments(self, queries: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` user codes and scores per query column of ``queries`` ([n_items,
        n_queries] weights of the query items): ([n_queries, k] int64, float32), best
        first; -1 pads."""


# recipe type -> its interface; every recipe class derives from exactly one of these
INTERFACES: dict[str, type[Recipe]] = {
    cls.recipe_type: cls for cls in (UserRecommender, Ranker, RelatedItemsRecipe, UserSegmenter)
}


def interface_of(cls: type[Recipe]) -> type[Recipe]:
    """The one recipe-type interface ``cls`` implements."""
    found = [interface for interface in INTERFACES.values() if issubclass(cls, interface)]
    if len(found) != 1:
        raise TypeError(f"{cls.__name__} implements {len(found)} recipe-type interfaces; it must implement exactly one")
    return found[0]


__all__ = [
    "SegmentInput",
    "UserRecommender",
    "Ranker",
    "RelatedItemsRecipe",
    "UserSegmenter",
    "INTERFACES",
    "interface_of",
    "explores",
]
