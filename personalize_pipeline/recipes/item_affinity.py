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

A segment ranks users by ``activity(u) * a(u, i) / sum_j h_uj``: how active the user is
(training events) times the share of the user's recent history that points at the item —
"will this user be active" times "will the activity go to this item". Without the activity
factor (raw sums over capped histories) segments were no better than a most-active-users
list on movielens-poc; the bench/README.md section has the figures. A query for several items (an
attribute condition) sums their columns. As matrices, for a block of queries ``Q``
(``[n_items, n_queries]``, sparse): ``A = H (r I + S) Q`` — two sparse products, then a
top-k per column. Users with no affinity at all fill a segment by activity (events), with
score 0. ``score`` (users × items) makes the recipe usable with ``evaluate`` too.

UPDATE recomputes on the current data (the default of :meth:`Recipe.update`).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from ..features import Features
from .base import HyperParameter as HP
from .base import UserBatch, top_k
from .interfaces import SegmentInput, UserSegmenter
from .similar_items import blend_neighbours, cointeraction_matrix

NEIGHBOURS = 100
BLOCK_CELLS = 8_000_000  # dense users × queries scores at a time


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
        self._set_state(
            {
                "sim_indptr": indptr,
                "sim_indices": indices,
                "sim_data": data,
                "h_indptr": h.indptr.astype(np.int64),
                "h_indices": h.indices.astype(np.int32),
                "h_data": h.data.astype(np.float32),
                "activity": np.bincount(users, minlength=n_users).astype(np.int64),
            }
        )
        self.fitted = True
        self._stats = {
            "interactions": int(len(items)),
            "neighbour_pairs": int(len(indices)),
            "history_entries": int(h.nnz),
            "seconds": round(time.perf_counter() - start, 3),
        }
        return self

    def training_stats(self) -> dict[str, Any]:
        return dict(getattr(self, "_stats", {}))

    def state(self) -> dict[str, np.ndarray]:
        return dict(self._state)

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self._state = {k: np.asarray(v) for k, v in state.items()}
        activity = self._state["activity"].astype(np.int64)
        self.n_users = n_users = len(activity)
        self.n_items = n_items = len(self._state["sim_indptr"]) - 1
        sim = sp.csr_matrix((state["sim_data"], state["sim_indices"], state["sim_indptr"]), shape=(n_items, n_items))
        # r I + S: one item's affinity "profile" per row
        self.propagate = (
            sim + sp.identity(n_items, dtype=np.float32, format="csr") * np.float32(self.params["repeat_weight"])
        ).tocsr()
        history = sp.csr_matrix((state["h_data"], state["h_indices"], state["h_indptr"]), shape=(n_users, n_items))
        # each user's history as shares (sum 1), times the user's activity (events)
        totals = np.asarray(history.sum(axis=1)).ravel()
        weight = np.where(totals > 0, activity / np.maximum(totals, 1e-12), 0.0).astype(np.float32)
        self.history = (sp.diags(weight) @ history).tocsr()
        order = np.lexsort((np.arange(n_users), -activity))
        rank = np.empty(n_users, dtype=np.int64)
        rank[order] = np.arange(n_users)
        self._fill_key = -(1.0 + rank.astype(np.float32))  # below any affinity, by activity

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
            scores = (self.history @ profile).toarray().T  # [block, n_users]
            key = np.where(scores > 0, scores, self._fill_key[None, :]).astype(np.float32)
            users, values = top_k(key, k)
            out_items[lo:hi] = users
            out_scores[lo:hi] = np.maximum(values, 0.0)
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
