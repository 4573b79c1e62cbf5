"""USER_SEGMENTATION recipes: aws-item-affinity and aws-item-attribute-affinity.

Amazon Personalize's segmentation recipes answer the reverse question of the others: not
"which items for this user" but "which users for this item" (Item-Affinity, input
``{"itemId": ...}``) or "for items with these attributes" (Item-Attribute-Affinity, input
``{"itemAttributes": "ITEMS.GENRES = \\"Comedy\\" AND ..."}``), in batch segment jobs
(:mod:`personalize_pipeline.segments`).

Model — item-based collaborative filtering read backwards. A user's affinity for item ``i``::

    a(u, i) = sum over j in H(u) of  h_uj * (r * [j == i] + sim(j, i))

* ``H(u)``: the user's last ``history_length`` distinct items, ``h_uj`` a recency weight
  (1 for the newest, falling as ``1 / (1 + position / 10)`` with the position from the end);
* ``sim``: aws-sims' co-occurrence cosine (each item's ``NEIGHBOURS`` best);
* ``r`` = ``repeat_weight``: how much having interacted with ``i`` itself counts (repeat
  consumption; 0 = only users who did not interact yet are found through neighbours).

A segment ranks users by ``act(u) * a(u, i) / sum_j h_uj``: P(user active next) times
P(item | user active) — how active the user has been *lately* times the share of the user's
recent history that points at the item (read as rates: the user's expected events next times
the share going to the item). ``act`` is the recency-weighted event count of
:mod:`.activity`, with ``activity_half_life_days`` (0 = chosen on the latest 10 % of the
training events, from the data's own time span; ``inf`` there means lifetime counts). A user
who was very active long ago and silent since ranks below a recently active user with the
same affinity. Ranking is done on ``log act + log share`` so that short half-lives over long
histories do not underflow. A query for several items (an attribute condition) sums their
columns. As matrices, for a block of queries ``Q`` (``[n_items, n_queries]``, sparse):
``A = H (r I + S) Q`` — two sparse products, then a top-k per column. Users with no
affinity at all fill a segment by activity, with score 0; the scores returned are
``act(u) / max act * share``. ``score`` (users × items) makes the recipe usable with
``evaluate`` too. The bench/README.md section "Batch segments" has the figures.

UPDATE recomputes on the current data (the default of :meth:`Recipe.update`).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from ..features import Features
from .activity import SECONDS_PER_DAY, choose_half_life, log_activity
from .base import HyperParameter as HP
from .base import UserBatch, top_k
from .interfaces import SegmentInput, UserSegmenter
from .similar_items import blend_neighbours, cointeraction_matrix

NEIGHBOURS = 100
BLOCK_CELLS = 8_000_000  # dense users × queries scores at a time
LOG_FLOOR = -1e5  # log(act / max act * share) below this ties (an activity ~e^-100000 of the best)
FILL_OFFSET = 1e6  # users without affinity: keys -(FILL_OFFSET + activity rank), below LOG_FLOOR


class ItemAffinity(UserSegmenter):
    name = "aws-item-affinity"
    segment_input: ClassVar[SegmentInput] = "itemId"
    hyperparameters = (
        HP("history_length", int, 50, 1, 500, tunable=True, help="the last N distinct items of each user count"),
        HP(
            "repeat_weight",
            float,
            1.0,
            0.0,
            10.0,
            tunable=True,
            help="weight of having interacted with the item itself",
        ),
        HP("min_cointeraction_count", int, 1, 0, 10, tunable=True),
        HP(
            "activity_half_life_days",
            float,
            0.0,
            0.0,
            36500.0,
            help="half-life of the recency-weighted activity; 0 = chosen on the latest 10 % of training events",
        ),
    )
    description = "Users most likely to interact with a given item (batch segment jobs)."

    def fit(self, features: Features, seed: int = 42) -> ItemAffinity:
        start = time.perf_counter()
        n_items, n_users = features.n_items, features.n_users
        users = features.interactions["user"].to_numpy(np.int64)
        items = features.interactions["item"].to_numpy(np.int64)
        pairs = np.unique(users * n_items + items)
        unique_users = np.bincount(pairs % n_items, minlength=n_items)
        co = cointeraction_matrix(
            pairs // n_items,
            pairs % n_items,
            n_users,
            n_items,
            unique_users,
            0.5,
            self.params["min_cointeraction_count"],
        )
        indptr, indices, data = blend_neighbours(co, sp.csr_matrix((n_items, 0), dtype=np.float32), 0.0, NEIGHBOURS)
        h = history_matrix(users, items, n_users, n_items, self.params["history_length"])
        times = features.interactions["timestamp"].to_numpy(np.int64)
        half_life = self.params["activity_half_life_days"] * SECONDS_PER_DAY or choose_half_life(users, times, n_users)
        now = float(times.max()) if len(times) else 0.0
        self._set_state(
            {
                "sim_indptr": indptr,
                "sim_indices": indices,
                "sim_data": data,
                "h_indptr": h.indptr.astype(np.int64),
                "h_indices": h.indices.astype(np.int32),
                "h_data": h.data.astype(np.float32),
                "log_activity": log_activity(users, times, n_users, half_life, now),
            }
        )
        self.fitted = True
        self._stats = {
            "interactions": int(len(items)),
            "neighbour_pairs": int(len(indices)),
            "history_entries": int(h.nnz),
            "activity_half_life_days": round(half_life / SECONDS_PER_DAY, 3) if np.isfinite(half_life) else "inf",
            "seconds": round(time.perf_counter() - start, 3),
        }
        return self

    def training_stats(self) -> dict[str, Any]:
        return dict(getattr(self, "_stats", {}))

    def state(self) -> dict[str, np.ndarray]:
        return dict(self._state)

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self._state = {k: np.asarray(v) for k, v in state.items()}
        if "log_activity" not in self._state:  # versions saved before recency weighting: lifetime counts
            with np.errstate(divide="ignore"):
                self._state["log_activity"] = np.log(self._state.pop("activity").astype(np.float64))
        log_act = self._state["log_activity"].astype(np.float64)
        self.n_users = n_users = len(log_act)
        self.n_items = n_items = len(self._state["sim_indptr"]) - 1
        sim = sp.csr_matrix((state["sim_data"], state["sim_indices"], state["sim_indptr"]), shape=(n_items, n_items))
        # r I + S: one item's affinity "profile" per row
        self.propagate = (
            sim + sp.identity(n_items, dtype=np.float32, format="csr") * np.float32(self.params["repeat_weight"])
        ).tocsr()
        history = sp.csr_matrix((state["h_data"], state["h_indices"], state["h_indptr"]), shape=(n_users, n_items))
        # each user's history as shares (sum 1): P(item | user active)
        totals = np.asarray(history.sum(axis=1)).ravel()
        self.history = (sp.diags(np.where(totals > 0, 1.0 / np.maximum(totals, 1e-12), 0.0)) @ history).tocsr()
        # log P(active next), relative to the most active user (<= 0; -inf: no events)
        self.log_activity = log_act - (log_act.max() if np.isfinite(log_act).any() else 0.0)
        order = np.lexsort((np.arange(n_users), -log_act))
        rank = np.empty(n_users, dtype=np.int64)
        rank[order] = np.arange(n_users)
        self._fill_key = -(FILL_OFFSET + rank.astype(np.float64))  # below any affinity, by activity

    # --- segments -------------------------------------------------------------------------------
    def segments(self, queries: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` user codes and affinities per query column of ``queries``
        ([n_items, n_queries], weights of the query items): ([n_queries, k] int64, float32),
        best first; users with no affinity follow by activity with score 0."""
        self._check_fitted()
        queries = sp.csc_matrix(queries, dtype=np.float32)
        n_q, k = queries.shape[1], min(int(k), self.n_users)
        out_items = np.full((n_q, k), -1, dtype=np.int64)
        out_scores = np.zeros((n_q, k), dtype=np.float32)
        step = max(1, BLOCK_CELLS // max(self.n_users, 1))
        for lo in range(0, n_q, step):
            hi = min(n_q, lo + step)
            profile = (self.propagate @ queries[:, lo:hi]).tocsc()  # [n_items, block]
            share = (self.history @ profile).tocoo()  # [n_users, block]
            positive = share.data > 0
            rows, cols = share.row[positive], share.col[positive]
            key = np.tile(self._fill_key, (hi - lo, 1))  # [block, n_users]
            key[cols, rows] = np.maximum(np.log(share.data[positive]) + self.log_activity[rows], LOG_FLOOR)
            users, values = top_k(key, k)
            out_items[lo:hi] = users
            out_scores[lo:hi] = np.where(values > LOG_FLOOR - 1, np.exp(values), 0.0)
        return out_items, out_scores

    # --- users × items, for evaluate ----------------------------------------------------------
    def score(self, batch: UserBatch) -> np.ndarray:
        self._check_fitted()
        indptr = np.asarray(batch.history_indptr, dtype=np.int64)
        n = len(indptr) - 1
        users = np.repeat(np.arange(n), np.diff(indptr))
        items = np.asarray(batch.history_items, dtype=np.int64)
        h = history_matrix(users, items, n, self.n_items, self.params["history_length"])
        return (h @ self.propagate).toarray().astype(np.float32, copy=False)


class ItemAttributeAffinity(ItemAffinity):
    name = "aws-item-attribute-affinity"
    segment_input = "itemAttributes"
    datasets = ("interactions", "items")
    description = "Users most likely to interact with items that have given attributes (batch segment jobs)."


def history_matrix(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, length: int) -> sp.csr_matrix:
    """[n_users, n_items] recency weights of each user's last ``length`` distinct items
    (events grouped by user in time order): the newest 1, then ``1 / (1 + p / 10)`` at
    position ``p`` from the end. A repeated item keeps its newest weight."""
    n = len(items)
    if n == 0:
        return sp.csr_matrix((n_users, n_items), dtype=np.float32)
    # newest occurrence of each (user, item): keep events not repeated later by the same user
    key = users * n_items + items
    order = np.argsort(key[::-1], kind="stable")
    first_rev = np.ones(n, dtype=bool)
    sorted_keys = key[::-1][order]
    first_rev[1:] = sorted_keys[1:] != sorted_keys[:-1]
    newest = np.zeros(n, dtype=bool)
    newest[(n - 1 - order)[first_rev]] = True
    # position among the user's distinct items, from the end
    kept = np.flatnonzero(newest)
    kept_users = users[kept]
    group_start = np.r_[True, kept_users[1:] != kept_users[:-1]]
    group = np.cumsum(group_start) - 1
    group_last = np.r_[np.flatnonzero(group_start)[1:], len(kept)] - 1
    rev_rank = group_last[group] - np.arange(len(kept))
    keep = rev_rank < length
    weights = (1.0 / (1.0 + rev_rank[keep] / 10.0)).astype(np.float32)
    return sp.csr_matrix((weights, (kept_users[keep], items[kept][keep])), shape=(n_users, n_items))
