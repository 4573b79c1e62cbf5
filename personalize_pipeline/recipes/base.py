"""The interface every recipe shares, in the manner of scikit-learn estimators.

Hyperparameters are declared once per recipe (name, type, default, range, HPO-tunable) and
validated here; a recipe instance holds validated values in ``self.params``. ``fit`` learns
from a :class:`~personalize_pipeline.features.Features`, ``update`` folds in new data
(a cheap refresh of a FULL model), ``score`` gives users × items scores for a
:class:`UserBatch`, ``recommend`` turns scores into top-k with optional exclusions (what
offline evaluation calls, for every recipe type), and ``state``/``from_state`` are what the
solution store saves and loads. What batch inference asks of each recipe type is declared
in :mod:`.interfaces`: every recipe derives from exactly one of those.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import InputError
from ..features import Features

RECIPE_TYPES = ("USER_PERSONALIZATION", "PERSONALIZED_RANKING", "RELATED_ITEMS", "USER_SEGMENTATION")


@dataclass(frozen=True)
class HyperParameter:
    name: str
    type: type  # int, float, bool or str
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    tunable: bool = False
    featurization: bool = False  # applies to featurization rather than the algorithm
    help: str = ""

    def parse(self, value: Any) -> Any:
        """Convert a string or JSON value to this hyperparameter's type, within its range."""
        try:
            if self.type is bool:
                if isinstance(value, str):
                    lowered = value.strip().lower()
                    if lowered not in ("true", "false"):
                        raise ValueError
                    parsed: Any = lowered == "true"
                else:
                    parsed = bool(value) if isinstance(value, (bool, np.bool_)) else _raise()
            elif self.type is int:
                parsed = (
                    int(str(value).strip()) if not isinstance(value, float) or float(value).is_integer() else _raise()
                )
            elif self.type is float:
                parsed = float(value)
                if not np.isfinite(parsed):
                    raise ValueError
            else:
                parsed = str(value)
        except (TypeError, ValueError):
            raise InputError(f"hyperparameter {self.name}: {value!r} is not a valid {self.type.__name__}") from None
        if self.low is not None and parsed < self.low or self.high is not None and parsed > self.high:
            raise InputError(f"hyperparameter {self.name}: {parsed!r} is out of range [{self.low}, {self.high}]")
        if self.choices is not None and parsed not in self.choices:
            raise InputError(
                f"hyperparameter {self.name}: {parsed!r} is not one of {', '.join(map(str, self.choices))}"
            )
        return parsed

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type.__name__,
            "default": self.default,
            "range": [self.low, self.high] if self.low is not None or self.high is not None else None,
            "choices": list(self.choices) if self.choices else None,
            "tunable": self.tunable,
        }


def _raise():
    raise ValueError


def segment_index(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gather plan for the segments ``[starts[i], starts[i] + lengths[i])`` of a flat array:
    the CSR pointer of the gathered result and the flat positions to take, vectorised."""
    ptr = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=ptr[1:])
    total = int(ptr[-1])
    index = np.repeat(starts, lengths) + (np.arange(total, dtype=np.int64) - np.repeat(ptr[:-1], lengths))
    return ptr, index


@dataclass
class UserBatch:
    """Users to score: codes (-1 for users the model does not know) and each user's
    time-ordered history of item codes as CSR (``history_items[indptr[i]:indptr[i+1]]``)."""

    users: np.ndarray
    history_indptr: np.ndarray
    history_items: np.ndarray
    history_context: np.ndarray | None = None  # [len(history_items), n_context] codes, 0 = missing
    # True when the histories are exactly those the model was trained on (a solution
    # version's own): recipes may then use per-user state cached at training time
    stored: bool = False
    # [len(history_items), 2] event-type code (-1 = none) and timestamp of each history event,
    # or None (a repeat head reads them: recipes/repeat_head.py)
    history_signals: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.users)

    @classmethod
    def from_histories(
        cls,
        users: np.ndarray,
        indptr: np.ndarray,
        items: np.ndarray,
        rows: np.ndarray | None = None,
        context: np.ndarray | None = None,
        signals: np.ndarray | None = None,
    ) -> UserBatch:
        """Gather rows ``rows`` (default: ``users``) of a CSR history (and its per-event
        context codes and signals); -1 rows get no history."""
        rows = users if rows is None else rows
        rows = np.asarray(rows, dtype=np.int64)
        known = rows >= 0
        starts = np.where(known, indptr[np.where(known, rows, 0)], 0)
        ends = np.where(known, indptr[np.where(known, rows, 0) + 1], 0)
        out_ptr, index = segment_index(starts, ends - starts)
        total = len(index)
        gathered = items[index] if total else np.zeros(0, dtype=items.dtype if len(items) else np.int32)
        ctx, sig = (_gather_rows(values, index) if values is not None else None for values in (context, signals))
        return cls(np.asarray(users, dtype=np.int64), out_ptr, gathered, ctx, history_signals=sig)

    def rows(self, lo: int, hi: int) -> UserBatch:
        """The users ``lo:hi`` of this batch (a CSR slice; no copy of the other users)."""
        a, b = int(self.history_indptr[lo]), int(self.history_indptr[hi])
        ctx = self.history_context[a:b] if self.history_context is not None else None
        sig = self.history_signals[a:b] if self.history_signals is not None else None
        return UserBatch(
            self.users[lo:hi], self.history_indptr[lo : hi + 1] - a, self.history_items[a:b], ctx, self.stored, sig
        )

    def seen_mask_rows_cols(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, item) pairs of every history item, for excluding seen items."""
        rows = np.repeat(np.arange(len(self.users)), np.diff(self.history_indptr))
        return rows, self.history_items

    def repeat_history(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """:meth:`seen_mask_rows_cols` and the events' signals: what the repeat mixture reads."""
        return (*self.seen_mask_rows_cols(), self.history_signals)


def _gather_rows(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[index]`` (rows of a per-event matrix), also for an empty ``index``."""
    return values[index] if len(index) else np.zeros((0, values.shape[1]), dtype=values.dtype)


class Recipe(ABC):
    """Base class of all recipes. Subclasses set the class attributes and implement
    ``fit``, ``score`` (or ``recommend``), ``state`` and ``_set_state``; ``recipe_type`` comes
    from the one interface of :mod:`.interfaces` a recipe derives from."""

    name: ClassVar[str]
    recipe_type: ClassVar[str]
    hyperparameters: ClassVar[tuple[HyperParameter, ...]] = ()
    datasets: ClassVar[tuple[str, ...]] = ("interactions",)
    description: ClassVar[str] = ""
    # Personalize lists these among the recipe's hyperparameters, but they are campaign /
    # batch inference job settings (e.g. itemExplorationConfig), not training ones
    campaign_options: ClassVar[tuple[str, ...]] = ()
    # whether training reads the impression lists (False: featurization does not keep them)
    uses_impressions: ClassVar[bool] = True

    def __init__(self, **params: Any):
        self.params = self.resolve_hyperparameters(params)
        self.n_items = 0
        self.fitted = False

    # --- hyperparameters ----------------------------------------------------------------------
    @classmethod
    def resolve_hyperparameters(cls, given: dict[str, Any] | None) -> dict[str, Any]:
        declared = {hp.name: hp for hp in cls.hyperparameters}
        given = dict(given or {})
        unknown = sorted(set(given) - set(declared))
        campaign = [name for name in unknown if name in cls.campaign_options]
        if campaign:
            raise InputError(
                f"{campaign[0]} is a campaign / batch inference setting (itemExplorationConfig), "
                f"not a training hyperparameter: pass --{campaign[0].replace('_', '-')} to batch-infer"
            )
        if unknown:
            known = ", ".join(declared) or "none"
            raise InputError(f"recipe {cls.name} has no hyperparameter {unknown[0]!r} (known: {known})")
        return {name: hp.parse(given[name]) if name in given else hp.default for name, hp in declared.items()}

    @classmethod
    def featurize_options(
        cls, params: dict[str, Any], event_type: str | None = None, event_value_threshold: float | None = None
    ):
        from ..features import FeaturizeOptions

        return FeaturizeOptions(
            event_type=event_type,
            event_value_threshold=event_value_threshold,
            min_user_history_length_percentile=float(params.get("min_user_history_length_percentile", 0.0)),
            max_user_history_length_percentile=float(params.get("max_user_history_length_percentile", 1.0)),
            impressions=cls.uses_impressions,
        )

    # --- training --------------------------------------------------------------------------
    def fit(self, features: Features, seed: int = 42) -> Recipe:
        raise NotImplementedError

    def reads_event_signals(self) -> bool:
        """Whether scoring reads the history events' types and times (``UserBatch.history_signals``):
        a solution version then keeps each event's time next to its item."""
        return False

    def training_set(self, features: Features) -> Features:
        """The interactions this recipe learns from: without the users outside its
        min/max_user_history_length_percentile (Personalize's featurization
        hyperparameters). ``fit`` gets every event; the percentiles shape training only,
        so the heaviest users still get personal recommendations."""
        from ..features import training_set

        kept, self.users_dropped_by_history_percentiles = training_set(
            features,
            float(self.params.get("min_user_history_length_percentile", 0.0)),
            float(self.params.get("max_user_history_length_percentile", 1.0)),
        )
        return kept

    def update(
        self,
        features: Features,
        seed: int = 42,
        previous_item_ids: np.ndarray | None = None,
        previous_user_ids: np.ndarray | None = None,
    ) -> Recipe:
        """Fold in new data after a FULL training, starting from this (loaded) model.

        ``previous_item_ids`` is the catalogue the model was trained with, so that a recipe
        can carry learned item state over to the new item codes. Default: train again."""
        return self.fit(features, seed=seed)

    def training_stats(self) -> dict[str, Any]:
        return {}

    # --- inference ------------------------------------------------------------------------------
    def score(self, batch: UserBatch) -> np.ndarray:
        """Scores of every item for every user of the batch: float32 [len(batch), n_items]."""
        raise NotImplementedError

    def recommend(
        self, batch: UserBatch, k: int, exclude_seen: bool = False, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item codes and scores per user, best first: ([n, k] int64, [n, k] float32).

        ``allowed`` ([n, n_items] bool, e.g. from a filter) is applied inside the top-k, so
        a filtered list is still full where the catalogue allows; slots that cannot be
        filled are -1."""
        return masked_top_k(self.score(batch), batch, k, exclude_seen, allowed)

    # --- persistence ----------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    @classmethod
    def from_state(cls, params: dict[str, Any], state: dict[str, np.ndarray]) -> Recipe:
        recipe = cls(**params)
        recipe._set_state(state)
        recipe.fitted = True
        return recipe

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"{self.name}: fit() must be called first")


def masked_top_k(
    scores: np.ndarray, batch: UserBatch, k: int, exclude_seen: bool = False, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k` of a copy of ``scores`` with the batch's history items (``exclude_seen``)
    and the items not ``allowed`` at -inf."""
    scores = np.array(scores, dtype=np.float32, copy=True)
    if exclude_seen:
        rows, cols = batch.seen_mask_rows_cols()
        scores[rows, cols] = -np.inf
    if allowed is not None:
        scores[~allowed] = -np.inf
    return top_k(scores, k)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per row, best first; ties go to the lower item code. Uses torch.topk on CPU
    threads (several times faster than numpy argpartition for wide rows)."""
    import torch

    n, m = scores.shape
    k = min(k, m)
    if k == 0 or n == 0:
        return np.zeros((n, k), dtype=np.int64), np.zeros((n, k), dtype=np.float32)
    top_values, top_indices = torch.topk(torch.from_numpy(np.ascontiguousarray(scores)), k, dim=1, sorted=True)
    values, indices = top_values.numpy(), top_indices.numpy().astype(np.int64)
    # make ties deterministic: within equal scores order by item code
    order = np.lexsort((indices, -values), axis=1)
    indices, values = np.take_along_axis(indices, order, 1), np.take_along_axis(values, order, 1)
    indices[np.isneginf(values)] = -1  # excluded items never fill a list
    return indices, values
