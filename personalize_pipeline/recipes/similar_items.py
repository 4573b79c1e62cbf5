"""aws-similar-items (RELATED_ITEMS): co-interactions and item metadata together.

Amazon Personalize's Similar-Items recipe "generates recommendations for items that are
similar to an item you specify ... based on co-interactions and item metadata", so that new
items without interactions still get related items. Here an item pair's similarity is a
blend of two cosines::

    sim(i, j) = (1 - w) * co(i, j) + w * meta(i, j) * g(j)          w = metadata_weight

* ``co`` is aws-sims' co-occurrence similarity ``C_ij / (n_i n_j)^d`` (``C = XᵀX`` of the
  binary user × item matrix, pairs below ``min_cointeraction_count`` dropped; every item
  with interactions takes part, there is no popularity cut);
* ``meta`` is the cosine of the items' metadata vectors (:func:`metadata_matrix`): one block
  per Items field, each block L2-normalised so that every field weighs the same —
  categorical fields multi-hot (``|`` multi-values), numeric fields one-hot of their decile
  (so "similar price" is shared membership of a price band), textual fields TF-IDF of their
  lower-cased word tokens (tokens in one item only, or in more than half the catalogue,
  are dropped: they link nothing or everything).

``g(j) = (log(2 + n_j) / log(2 + max n))^4`` (``n_j`` = users of ``j``) prefers, among
items sharing attributes, those many users chose: next-item hit rate for new query items
is several times higher with it than with attributes alone (bench/README.md), since the
long tail of a genre is rarely where users go next. An item without interactions has
``co = 0`` and gets the (popular) items sharing most of its attributes; an item without
metadata gets its co-occurring items. Neighbours are computed in blocks of query items
(dense ``[block, n_items]`` scores from one sparse product each, then ``torch.topk``), so
memory stays bounded; the query item itself never comes back.
The neighbour lists, the popularity fallback and inference are aws-sims' (this class
extends :class:`~personalize_pipeline.recipes.sims.SIMS`).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from ..features import Features
from .base import HyperParameter as HP
from .sims import SIMS

NEIGHBOURS = 100  # per item, best first
BLOCK_CELLS = 8_000_000  # dense scores per block of query items
NUMERIC_BINS = 10
MAX_TOKEN_SHARE = 0.5
PRIOR_EXPONENT = 4.0  # of the popularity prior; chosen on bench/similar_items.py (2 and 4 tried)


class SimilarItems(SIMS):
    name = "aws-similar-items"
    datasets = ("interactions", "items")
    hyperparameters = (
        HP(
            "metadata_weight",
            float,
            0.1,
            0.0,
            1.0,
            tunable=True,
            help="w in (1 - w) * co-interaction cosine + w * metadata cosine",
        ),
        HP(
            "popularity_discount_factor",
            float,
            0.5,
            0.0,
            1.0,
            tunable=True,
            help="d of the co-interaction part, as in aws-sims (0.5 = cosine)",
        ),
        HP(
            "min_cointeraction_count",
            int,
            1,
            0,
            10,
            tunable=True,
            help="pairs co-occurring in fewer user histories get no co-interaction similarity",
        ),
    )
    description = (
        "Items similar to a given item from co-interactions and item metadata (categorical, numeric, text); "
        "new items get neighbours sharing their attributes."
    )

    def fit(self, features: Features, seed: int = 42) -> SimilarItems:
        start = time.perf_counter()
        p = self.params
        n_items = features.n_items
        users = features.interactions["user"].to_numpy(np.int64)
        items = features.interactions["item"].to_numpy(np.int64)
        events = np.bincount(items, minlength=n_items).astype(np.int64)
        pairs = np.unique(users * n_items + items)
        unique_users = np.bincount(pairs % n_items, minlength=n_items).astype(np.int64)
        co = cointeraction_matrix(
            pairs // n_items,
            pairs % n_items,
            features.n_users,
            n_items,
            unique_users,
            p["popularity_discount_factor"],
            p["min_cointeraction_count"],
        )
        meta = metadata_matrix(features.items)
        w = float(p["metadata_weight"]) if meta.shape[1] else 0.0
        indptr, indices, data = blend_neighbours(co, meta, w, NEIGHBOURS, popularity_prior(unique_users))
        self._set_state(
            {
                "indptr": indptr,
                "indices": indices,
                "data": data,
                "unique_users": unique_users,
                "events": events,
                "eligible": np.ones(n_items, dtype=bool),
            }
        )
        self.fitted = True
        has_events = events > 0
        has_neighbours = np.diff(indptr) > 0
        self._stats = {
            "interactions": int(len(items)),
            "items_with_interactions": int(has_events.sum()),
            "metadata_features": int(meta.shape[1]),
            "cointeraction_pairs": int(co.nnz),
            "neighbour_pairs": int(len(indices)),
            "items_with_neighbours": int(has_neighbours.sum()),
            "items_without_interactions_with_neighbours": int((has_neighbours & ~has_events).sum()),
            "seconds": round(time.perf_counter() - start, 3),
        }
        return self


def cointeraction_matrix(
    pair_users, pair_items, n_users: int, n_items: int, unique_users, d: float, min_count: int
) -> sp.csr_matrix:
    """Sparse [n_items, n_items] ``C_ij / (n_i n_j)^d`` of distinct (user, item) pairs,
    diagonal and pairs below ``min_count`` removed."""
    x = sp.csr_matrix((np.ones(len(pair_users), dtype=np.float32), (pair_users, pair_items)), shape=(n_users, n_items))
    co = (x.T.tocsr() @ x).tocoo()
    keep = (co.row != co.col) & (co.data >= max(min_count, 1))
    rows, cols, counts = co.row[keep], co.col[keep], co.data[keep].astype(np.float64)
    n = np.maximum(unique_users.astype(np.float64), 1.0)
    values = counts / (n[rows] * n[cols]) ** d if d else counts
    return sp.csr_matrix((values.astype(np.float32), (rows, cols)), shape=(n_items, n_items))


def metadata_matrix(items: pd.DataFrame) -> sp.csr_matrix:
    """Sparse [n_items, features], rows L2-normalised, of the featurized Items columns:
    ``cat_*`` multi-hot, ``num_*`` decile one-hot, text (``raw_*`` with no encoded twin)
    TF-IDF; each field's block L2-normalised first so that fields weigh alike."""
    n = len(items)
    blocks = []
    for column in items.columns:
        name = column[4:]
        if column.startswith("cat_"):
            blocks.append(_categorical_block(items[column], n))
        elif column.startswith("num_"):
            raw = items[f"raw_{name}"] if f"raw_{name}" in items else items[column]  # num_* has missing as the mean
            blocks.append(_numeric_block(pd.to_numeric(raw, errors="coerce").to_numpy(np.float64), n))
        elif column.startswith("raw_") and f"cat_{name}" not in items and f"num_{name}" not in items:
            blocks.append(_text_block(items[column], n))
    blocks = [_normalise_rows(b) for b in blocks if b.shape[1]]
    if not blocks:
        return sp.csr_matrix((n, 0), dtype=np.float32)
    return _normalise_rows(sp.hstack(blocks, format="csr"))


def _categorical_block(column: pd.Series, n: int) -> sp.csr_matrix:
    lists = pa.array(
        column.array._pa_array.combine_chunks() if hasattr(column.array, "_pa_array") else column.to_numpy(),
        from_pandas=True,
    )
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    codes = pc.fill_null(lists.flatten(), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    rows = np.repeat(np.arange(n), lengths)
    ok = codes > 0  # 0 = missing
    width = int(codes.max(initial=0))
    m = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (rows[ok], codes[ok] - 1)), shape=(n, width))
    m.data[:] = 1.0
    return m


def _numeric_block(values: np.ndarray, n: int) -> sp.csr_matrix:
    ok = np.isfinite(values)
    if ok.sum() < 2:
        return sp.csr_matrix((n, 0), dtype=np.float32)
    edges = np.unique(np.quantile(values[ok], np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1]))
    bins = np.searchsorted(edges, values[ok], side="right")
    return sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (np.flatnonzero(ok), bins)), shape=(n, len(edges) + 1))


def _text_block(column: pd.Series, n: int) -> sp.csr_matrix:
    text = pa.array(column.astype(object).where(column.notna(), None).to_numpy(), type=pa.string(), from_pandas=True)
    tokens = pc.split_pattern_regex(pc.utf8_lower(pc.fill_null(text, "")), r"[^\w]+")
    lengths = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
    flat_tokens = tokens.flatten()
    flat = flat_tokens.to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(n), lengths)
    keep = pc.greater(pc.utf8_length(flat_tokens), 1).to_numpy(zero_copy_only=False).astype(bool)  # no 1-letter tokens
    codes, vocab = pd.factorize(pd.Series(flat[keep], dtype=object))
    if not len(vocab):
        return sp.csr_matrix((n, 0), dtype=np.float32)
    tf = sp.csr_matrix((np.ones(len(codes), np.float32), (rows[keep], codes)), shape=(n, len(vocab)))
    tf.sum_duplicates()
    df = np.bincount(tf.indices, minlength=len(vocab))
    useful = (df >= 2) & (df <= MAX_TOKEN_SHARE * n)
    idf = np.where(useful, np.log((1 + n) / (1 + df)) + 1.0, 0.0).astype(np.float32)
    tfidf = tf @ sp.diags(idf)
    tfidf.eliminate_zeros()
    return tfidf.tocsr()


def _normalise_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    m = m.tocsr().astype(np.float32)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return (sp.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-12), 0.0).astype(np.float32)) @ m).tocsr()


def popularity_prior(unique_users: np.ndarray) -> np.ndarray:
    """``g(j)`` in (0, 1]: ``log(2 + n_j) / log(2 + max n)``, a gentle preference for items
    many users chose among those sharing attributes (new items keep a small weight)."""
    n = unique_users.astype(np.float64)
    return (np.log(2.0 + n) / np.log(2.0 + n.max(initial=0.0))).astype(np.float32) ** PRIOR_EXPONENT


def blend_neighbours(
    co: sp.csr_matrix, meta: sp.csr_matrix, w: float, top: int, prior: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per item the ``top`` items with the highest positive ``(1 - w) co_ij + w meta_ij g_j``
    (never the item itself), best first (ties: lower code), as CSR arrays."""
    import torch

    n = co.shape[0]
    k = min(top, max(n - 1, 0))
    block = max(1, BLOCK_CELLS // max(n, 1))
    meta_t = meta.T.tocsr() if w > 0 else None
    counts, indices, values = [], [], []
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        scores = co[lo:hi].toarray() * np.float32(1.0 - w)
        if meta_t is not None:
            meta_scores = (meta[lo:hi] @ meta_t).toarray() * np.float32(w)
            scores += meta_scores * prior[None, :] if prior is not None else meta_scores
        scores[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf
        if k == 0:
            counts.append(np.zeros(hi - lo, np.int64))
            continue
        top_val, top_idx = torch.topk(torch.from_numpy(scores), k, dim=1, sorted=True)
        val, idx = top_val.numpy(), top_idx.numpy().astype(np.int64)
        order = np.lexsort((idx, -val), axis=1)  # ties: lower item code first
        val, idx = np.take_along_axis(val, order, 1), np.take_along_axis(idx, order, 1)
        positive = val > 0
        counts.append(positive.sum(axis=1))
        indices.append(idx[positive])  # row-major: each row's positives stay best first
        values.append(val[positive])
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts) if counts else np.zeros(0, np.int64), out=indptr[1:])

    def concat(parts: list[np.ndarray], dtype: type[np.generic]) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    return indptr, concat(indices, np.int32), concat(values, np.float32)
