"""Shared checks of repeat-aware scores (recipes/repeats.py) for the recipe tests."""

import numpy as np

from personalize_pipeline.recipes import UserBatch


def assert_own_items_ranked_last(model, features, k: int) -> tuple[UserBatch, np.ndarray, np.ndarray]:
    """On data where nobody has an item twice: the model's top ``k`` (every item the user
    does not have) holds none of the user's items, ``score`` agrees with the top-k's
    scores and sums to 1. Returns (the batch of every user, indptr, items)."""
    assert model.training_stats()["repeat_share"] < 1e-3
    indptr, items = features.sequences()
    batch = UserBatch.from_histories(np.arange(features.n_users), indptr, items)
    batch.stored = True
    top, scores = model.recommend(batch, k)
    for u in range(features.n_users):
        assert not set(top[u]) & set(items[indptr[u] : indptr[u + 1]])
    full = model.score(batch)
    np.testing.assert_allclose(np.take_along_axis(full, top, axis=1), scores, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(full.sum(axis=1), 1.0, rtol=1e-5)
    return batch, indptr, items
