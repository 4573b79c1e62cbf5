"""aws-sims (RELATED_ITEMS): item-to-item similarity from co-occurrence in user histories.

As Amazon Personalize defines the recipe, items are similar when the same users interacted
with both; when an item has too few co-occurrences, or the item is unknown, the recipe falls
back to popular items.

Training (all sparse linear algebra, no Python loop over users, items or pairs):

1. Distinct (user, item) pairs give a binary user × item matrix ``X`` (``scipy.sparse`` CSR,
   float32). Only *eligible* items get columns: items whose interaction count (events) lies
   within the ``min/max_item_interaction_count_percentile`` quantiles of the counts of the
   items with interactions. Ineligible items (by default the 10 % most interacted-with) never
   appear as neighbours and have none; as query items they get popular items.
2. Co-occurrence ``C = Xᵀ X``: ``C[i, j]`` is the number of users who interacted with both
   ``i`` and ``j``. The diagonal is dropped, and so are pairs with
   ``C[i, j] < min_cointeraction_count``.
3. Similarity with popularity discount ``d = popularity_discount_factor``::

       sim(i, j) = C[i, j] / (n_i * n_j) ** d            n_i = users of item i (= C[i, i])

   a symmetric family that generalises the classic normalisations of item-based
   collaborative filtering: ``d = 0`` is the raw co-occurrence count (popular items
   dominate), ``d = 0.5`` is the cosine similarity of the items' binary user vectors (the
   Amazon.com item-to-item measure), and ``d = 1`` is ``lift / U`` (``C·U / (n_i n_j)`` is
   the lift, the ratio of observed to expected co-occurrence under independence; ``U`` is a
   constant, so it ranks alike). For a given query ``i`` the factor ``n_i ** d`` is constant,
   so the ranking of candidates is by ``C[i, j] / n_j ** d``: ``d`` is exactly how much a
   candidate's popularity is discounted; at ``d = 1`` it is ``P(i | j)``, how likely a user
   of ``j`` is to also use ``i``.
4. Per item the ``TOP_NEIGHBOURS`` most similar items are kept (ties: lower item code),
   sorted best first, as a CSR matrix; one stable ``argsort`` of a packed
   (row, descending score) key ranks all rows at once.
5. Popularity: distinct users per item, ranked (ties: lower item code).

Inference: :meth:`SIMS.related` gives each query item's neighbours, then popular items (not
already listed, never the query item) with score 0; :meth:`SIMS.recommend` scores a user by
the summed similarity rows of their last ``USER_HISTORY_ITEMS`` items (so SIMS runs under
the generic metrics code), then popular items.

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
from .interfaces import RelatedItemsRecipe

TOP_NEIGHBOURS = 500
USER_HISTORY_ITEMS = 10


class SIMS(RelatedItemsRecipe):
    name = "aws-sims"
    hyperparameters: ClassVar[tuple[HP, ...]] = (
        HP(
            "popularity_discount_factor",
            float,
            0.5,
            0.0,
            1.0,
            tunable=True,
            help="d in sim(i, j) = C_ij / (n_i n_j)^d: 0 raw co-occurrence counts, 0.5 cosine, 1 lift",
        ),
        HP(
            "min_cointeraction_count",
            int,
            3,
            0,
            10,
            tunable=True,
            help="pairs co-occurring in fewer user histories are not similar",
        ),
        HP(
            "min_item_interaction_count_percentile",
            float,
            0.01,
            0.0,
            1.0,
            featurization=True,
            help="items with fewer interactions than this quantile get and give no similarity",
        ),
        HP(
            "max_item_interaction_count_percentile",
            float,
            0.9,
            0.0,
            1.0,
            featurization=True,
            help="items with more interactions than this quantile get and give no similarity",
        ),
        HP("min_user_history_length_percentile", float, 0.005, 0.0, 1.0, featurization=True),
        HP("max_user_history_length_percentile", float, 0.995, 0.0, 1.0, featurization=True),
    )
    description = (
        "Items similar to a given item: co-occurrence in user histories with a popularity discount; "
        "popular items as fallback."
    )

    # --- training ---------------------------------------------------------------------------
    def fit(self, features: Features, seed: int = 42) -> SIMS:
        start = time.perf_counter()
        p = self.params
        features = self.training_set(features)
        n_items, n_users = features.n_items, features.n_users
        inter = features.interactions
        users = inter["user"].to_numpy(np.int64)
        items = inter["item"].to_numpy(np.int64)
        events = np.bincount(items, minlength=n_items).astype(np.int64)
        pairs = np.unique(users * n_items + items)  # distinct (user, item), sorted by user
        pair_users, pair_items = pairs // n_items, pairs % n_items
        unique_users = np.bincount(pair_items, minlength=n_items).astype(np.int64)

        # item interaction count percentiles (over items that have interactions)
        active = events[events > 0]
        eligible = events > 0
        if len(active):
            lo = np.quantile(active, p["min_item_interaction_count_percentile"])
            hi = np.quantile(active, p["max_item_interaction_count_percentile"])
            eligible &= (events >= lo) & (events <= hi)

        keep = eligible[pair_items]
        x = sp.csr_matrix(
            (np.ones(int(keep.sum()), dtype=np.float32), (pair_users[keep], pair_items[keep])),
            shape=(n_users, n_items),
        )
        co = (x.T.tocsr() @ x).tocsr()  # items × items co-occurrence counts
        co.sum_duplicates()
        co.sort_indices()
        rows = np.repeat(np.arange(n_items, dtype=np.int64), np.diff(co.indptr))
        cols = co.indices.astype(np.int64)
        counts = co.data
        mask = (rows != cols) & (counts > 0) & (counts >= p["min_cointeraction_count"])
        rows, cols, counts = rows[mask], cols[mask], counts[mask].astype(np.float64)
        n = unique_users.astype(np.float64)
        d = float(p["popularity_discount_factor"])
        sims = (counts / (n[rows] * n[cols]) ** d).astype(np.float32) if d else counts.astype(np.float32)
        indptr, indices, data = _top_per_row(rows, cols, sims, n_items, TOP_NEIGHBOURS)

        self._set_state(
            {
                "indptr": indptr,
                "indices": indices,
                "data": data,
                "unique_users": unique_users,
                "events": events,
                "eligible": eligible,
            }
        )
        self.fitted = True
        self._stats = {
            "interactions": int(len(items)),
            "users": int(len(np.unique(pair_users))),
            "items_with_interactions": int(len(active)),
            "eligible_items": int(eligible.sum()),
            "cointeraction_pairs": int(len(rows)),  # ordered pairs (i, j), i != j, above the minimum count
            "neighbour_pairs": int(len(indices)),  # kept after the per-item top TOP_NEIGHBOURS
            "items_with_neighbours": int((np.diff(indptr) > 0).sum()),
            "users_dropped_by_history_percentiles": self.users_dropped_by_history_percentiles,
            "seconds": round(time.perf_counter() - start, 3),
        }
        return self

    def training_stats(self) -> dict[str, Any]:
        return dict(getattr(self, "_stats", {}))

    # --- persistence --------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        return {
            "indptr": self.indptr,
            "indices": self.indices,
            "data": self.data,
            "unique_users": self.unique_users,
            "events": self.events,
            "eligible": self.eligible,
        }

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.unique_users = np.asarray(state["unique_users"], dtype=np.int64)
        self.events = np.asarray(state["events"], dtype=np.int64)
        self.eligible = np.asarray(state["eligible"], dtype=bool)
        self.n_items = n = len(self.unique_users)
        indptr = np.asarray(state["indptr"], dtype=np.int64)
        indices = np.asarray(state["indices"], dtype=np.int32)
        data = np.asarray(state["data"], dtype=np.float32)
        # neighbour lists, best first, for related(); a separate copy for sparse products
        # (scipy may sort a matrix's indices in place, which would lose the ranking)
        self.indptr, self.indices, self.data = indptr, indices, data
        self.sim = sp.csr_matrix((data.copy(), indices.copy(), indptr.copy()), shape=(n, n))
        # popularity: distinct users desc, then item code
        self.order = np.lexsort((np.arange(n), -self.unique_users))
        self.pop_rank = np.empty(n, dtype=np.int64)
        self.pop_rank[self.order] = np.arange(n)
        # top-k key of items without similarity: below any similarity, by popularity
        self._popular_key = -(1.0 + self.pop_rank.astype(np.float32))

    # --- inference ----------------------------------------------------------------------------
    def related(
        self, item_codes: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Items related to each query item (code, -1 = unknown), best first:
        ([n, min(k, n_items)] int64, same-shape float32).

        A query's neighbours come first (score = similarity > 0), then popular items not
        already listed (score 0); the query item itself never comes back. ``allowed``
        ([n, n_items] bool, e.g. from a filter) is applied before the list is cut, so
        allowed items fill it. -1 (score -inf) pads only when no more items can be offered."""
        self._check_fitted()
        q = np.asarray(item_codes, dtype=np.int64).reshape(-1)
        n, n_items = len(q), self.n_items
        width = max(0, min(int(k), n_items))
        if allowed is not None:
            return self._related_masked(q, width, np.asarray(allowed, dtype=bool))
        out = np.full((n, width), -1, dtype=np.int64)
        scores = np.full((n, width), -np.inf, dtype=np.float32)
        if n == 0 or width == 0:
            return out, scores
        known = (q >= 0) & (q < n_items)
        rows, cols, src, lens = self._neighbour_block(q, known, width)
        out[rows, cols] = self.indices[src]
        scores[rows, cols] = self.data[src]
        # popular fill: the width + 1 most popular items cover every row, since at most
        # lens (neighbours) + 1 (the query) of them are excluded
        n_cand = min(n_items, width + 1)
        cand = self.order[:n_cand]
        rank = np.minimum(self.pop_rank, n_cand)  # n_cand = "not a candidate" (spare column)
        keep = np.ones((n, n_cand + 1), dtype=bool)
        keep[rows, rank[self.indices[src]]] = False
        keep[np.flatnonzero(known), rank[q[known]]] = False
        keep = keep[:, :n_cand]
        pos = lens[:, None] + np.cumsum(keep, axis=1) - 1
        place = keep & (pos < width)
        pr, pc = np.nonzero(place)
        out[pr, pos[pr, pc]] = cand[pc]
        scores[pr, pos[pr, pc]] = 0.0
        return out, scores

    def _neighbour_block(self, q: np.ndarray, known: np.ndarray, width: int):
        """(row, column, CSR position, length per query) of the first ``width`` neighbours
        of each query, to scatter CSR rows into a dense [n, width] block."""
        qc = np.where(known, q, 0)
        starts = np.where(known, self.indptr[qc], 0)
        lens = np.where(known, np.minimum(self.indptr[qc + 1] - starts, width), 0)
        rows = np.repeat(np.arange(len(q)), lens)
        offsets = np.zeros(len(q) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        cols = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lens)
        return rows, cols, np.repeat(starts, lens) + cols, lens

    def _related_masked(self, q: np.ndarray, width: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """related() under an allowed-items mask. Every item of a row gets a distinct rank:
        a neighbour its position in the query's list (< TOP_NEIGHBOURS), any other item
        TOP_NEIGHBOURS + its popularity rank; excluded items and the query none. top-k of
        minus the ranks (distinct integers, exact in float32) then picks the same items,
        in the same order, as the unmasked path would."""
        n, n_items = len(q), self.n_items
        known = (q >= 0) & (q < n_items)
        key = np.broadcast_to(-(TOP_NEIGHBOURS + self.pop_rank).astype(np.float32), (n, n_items)).copy()
        rows, cols, src, _ = self._neighbour_block(q, known, TOP_NEIGHBOURS)
        key[rows, self.indices[src]] = -cols.astype(np.float32)
        key[np.flatnonzero(known), q[known]] = -np.inf
        key[~allowed] = -np.inf
        items, neg_rank = top_k(key, width)
        missing = np.isneginf(neg_rank)
        rank = np.where(missing, 0, -neg_rank).astype(np.int64)
        is_neighbour = ~missing & (rank < TOP_NEIGHBOURS)
        qc = np.where(known, q, 0)
        start = np.where(known, self.indptr[qc], 0)
        position = np.where(is_neighbour, start[:, None] + rank, 0)
        scores = np.where(is_neighbour, self.data[position] if len(self.data) else 0.0, 0.0)
        scores = np.where(missing, -np.inf, scores).astype(np.float32)
        return np.where(missing, -1, items), scores

    def score(self, batch: UserBatch) -> np.ndarray:
        """float32 [len(batch), n_items]: the summed similarity of each item to the user's
        last USER_HISTORY_ITEMS distinct history items (0 for unrelated items)."""
        self._check_fitted()
        return self._history_matrix(batch).dot(self.sim).toarray().astype(np.float32, copy=False)

    def recommend(
        self, batch: UserBatch, k: int, exclude_seen: bool = False, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Items with the highest :meth:`score`, then popular items (score 0); with
        ``exclude_seen`` a user's history items are skipped, with ``allowed`` ([n, n_items]
        bool) only allowed items are listed (-1, -inf pad when none are left)."""
        scores = self.score(batch)
        # unrelated items rank by popularity, below every related item
        key = np.where(scores > 0, scores, self._popular_key[None, :])
        if exclude_seen:
            rows, cols = batch.seen_mask_rows_cols()
            ok = (cols >= 0) & (cols < self.n_items)
            key[rows[ok], cols[ok]] = -np.inf
        if allowed is not None:
            key[~np.asarray(allowed, dtype=bool)] = -np.inf
        return _finish(*top_k(key, k))

    def _history_matrix(self, batch: UserBatch) -> sp.csr_matrix:
        """Binary [len(batch), n_items]: each user's last USER_HISTORY_ITEMS events."""
        indptr = np.asarray(batch.history_indptr, dtype=np.int64)
        items = np.asarray(batch.history_items, dtype=np.int64)
        n = len(indptr) - 1
        lengths = np.diff(indptr)
        rows = np.repeat(np.arange(n), lengths)
        recent = np.arange(len(items)) >= np.repeat(indptr[1:], lengths) - USER_HISTORY_ITEMS
        ok = recent & (items >= 0) & (items < self.n_items)
        h = sp.csr_matrix((np.ones(int(ok.sum()), dtype=np.float32), (rows[ok], items[ok])), shape=(n, self.n_items))
        h.data[:] = 1.0  # a repeated item counts once
        return h


def _finish(items: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores from a top-k key: similarity, 0 for popular fill, -inf (item -1) for none."""
    missing = np.isneginf(key)
    items = np.where(missing, -1, items)
    return items, np.where(missing, -np.inf, np.maximum(key, 0.0)).astype(np.float32)


def _top_per_row(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, top: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``top`` largest positive entries of each row, best first (ties: lower column),
    as CSR arrays. ``rows`` must be non-decreasing with ``cols`` increasing within a row.

    One stable argsort of an int64 key ``row << 32 | ~bits(value)``: the IEEE bits of a
    positive float32 order like the value, so the complement sorts best first, and
    stability keeps column order within ties."""
    bits = values.astype(np.float32).view(np.uint32).astype(np.int64)
    key = (rows.astype(np.int64) << 32) | (0xFFFFFFFF - bits)
    order = np.argsort(key, kind="stable")
    counts = np.bincount(rows, minlength=n_rows)
    row_start = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=row_start[1:])
    sorted_rows = rows[order]
    rank = np.arange(len(order)) - row_start[sorted_rows]
    chosen = order[rank < top]
    kept = np.minimum(counts, top)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(kept, out=indptr[1:])
    return indptr, cols[chosen].astype(np.int32), values[chosen].astype(np.float32)
