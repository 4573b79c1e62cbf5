"""aws-trending-now: the items whose interactions rise fastest, the same list for everyone.

Amazon Personalize's Trending-Now recipe finds "the top trending items by calculating the
increase in interactions that each item has over configurable intervals of time"; its one
hyperparameter, ``trend_discovery_frequency``, is that interval (30 mins, 1 hour, 3 hours or
1 day). Here the interval ``W`` is taken back from the newest event of the training data
(the data's "now", so that a batch job on last week's export finds last week's trends):

* ``recent`` = events per item in ``(now - W, now]``,
* ``before`` = events per item in ``(now - 2W, now - W]``, the window before it. When the
  data starts inside that window, ``before`` is scaled to a whole window by the covered
  span; when the data spans less than one window there is nothing to compare with and
  ``expected`` is 0 (the list is then the most interacted-with items of the window).
* ``trend = (recent - expected) / sqrt(expected + 1)`` with ``expected = before`` (scaled):
  the rise in events measured in Poisson standard deviations of the window before. A pure
  ratio would put an item going from 1 to 4 events above one going from 100 to 400; a pure
  difference would keep big steady items on top. This score rewards both how much and how
  surprisingly an item's rate rose.

Rising items (trend > 0) rank by trend; the others follow by recent events, then by all
events (ties: ITEM_ID order), so lists stay full and filters (batch jobs) have items to
choose from. Scores are each rising item's share of the summed positive trend (0 for the
others). Everything is a handful of ``bincount``\\ s over the events.

UPDATE recomputes on the current data (the default of :meth:`Recipe.update`): that is how
the trends move on, every time the two-hourly UPDATE runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..features import Features
from .base import HyperParameter as HP
from .base import UserBatch, masked_top_k
from .interfaces import UserRecommender

if TYPE_CHECKING:
    import torch

    from .user_personalization import ExplorationConfig

FREQUENCIES = {"30 mins": 1800, "1 hour": 3600, "3 hours": 10_800, "1 day": 86_400}


class TrendingNow(UserRecommender):
    name = "aws-trending-now"
    hyperparameters = (
        HP(
            "trend_discovery_frequency",
            str,
            "1 day",
            choices=tuple(FREQUENCIES),
            help="the window W: events in the last W against the W before",
        ),
    )
    description = (
        "Items whose interactions rise fastest over the last window against the window before; "
        "the same list for every user."
    )

    def fit(self, features: Features, seed: int = 42) -> TrendingNow:
        items = features.interactions["item"].to_numpy(np.int64)
        ts = features.interactions["timestamp"].to_numpy(np.int64)
        n_items = features.n_items
        window = FREQUENCIES[self.params["trend_discovery_frequency"]]
        now = int(ts.max()) if len(ts) else 0
        start = int(ts.min()) if len(ts) else 0
        recent_mask = ts > now - window
        before_mask = (ts > now - 2 * window) & ~recent_mask
        recent = np.bincount(items[recent_mask], minlength=n_items).astype(np.float64)
        before = np.bincount(items[before_mask], minlength=n_items).astype(np.float64)
        covered = min(window, now - window - start)  # seconds of the window before that hold data
        expected = before * (window / covered) if covered > 0 else np.zeros(n_items)
        trend = (recent - expected) / np.sqrt(expected + 1.0)
        self._set_state(
            {
                "trend": trend.astype(np.float32),
                "recent": recent.astype(np.int64),
                "events": np.bincount(items, minlength=n_items).astype(np.int64),
                "window": np.array([now - window, now], dtype=np.int64),
            }
        )
        self.fitted = True
        self._stats = {
            "events": int(len(items)),
            "window_seconds": window,
            "window_end": now,
            "recent_events": int(recent_mask.sum()),
            "before_events": int(before_mask.sum()),
            "rising_items": int((trend > 0).sum()),
        }
        return self

    def training_stats(self) -> dict[str, Any]:
        return dict(getattr(self, "_stats", {}))

    def state(self) -> dict[str, np.ndarray]:
        return {"trend": self.trend, "recent": self.recent, "events": self.events, "window": self.window}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.trend = np.asarray(state["trend"], dtype=np.float32)
        self.recent = np.asarray(state["recent"], dtype=np.int64)
        self.events = np.asarray(state["events"], dtype=np.int64)
        self.window = np.asarray(state["window"], dtype=np.int64)
        self.n_items = n = len(self.trend)
        rising = self.trend > 0
        # ranking: rising items by trend, then the rest by recent events, all events, item code
        self.order = np.lexsort((np.arange(n), -self.events, -self.recent, -np.where(rising, self.trend, 0.0), ~rising))
        rank = np.empty(n, dtype=np.int64)
        rank[self.order] = np.arange(n)
        total = float(self.trend[rising].sum())
        self.scores = np.where(rising, self.trend / total if total > 0 else 0.0, 0.0).astype(np.float32)
        # top-k key: distinct per item, in ranking order (exact in float32 below 2**24 items)
        self._key = (n - rank).astype(np.float32)

    def trending(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most trending item codes and their scores, best first."""
        self._check_fitted()
        top = self.order[: min(k, self.n_items)]
        return top, self.scores[top]

    def score(self, batch: UserBatch) -> np.ndarray:
        """The ranking as a key (distinct values, higher = more trending), for every user."""
        self._check_fitted()
        return np.broadcast_to(self._key, (len(batch), self.n_items))

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
        """The trending list for every user (with ``allowed`` / ``exclude_seen``, the first
        items of it that pass); scores are the trend shares."""
        self._check_fitted()
        if not exclude_seen and allowed is None:
            top, scores = self.trending(k)
            n = len(batch)
            return np.broadcast_to(top, (n, len(top))).copy(), np.broadcast_to(scores, (n, len(top))).copy()
        items, key = masked_top_k(self.score(batch), batch, k, exclude_seen, allowed)
        valid = items >= 0
        return items, np.where(valid, self.scores[np.maximum(items, 0)], -np.inf).astype(np.float32)
