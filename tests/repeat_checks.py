"""Shared checks of repeat-aware scores (recipes/repeats.py) for the recipe tests."""

import numpy as np

from personalize_pipeline.recipes import UserBatch

CLICK, WATCH = 0, 1  # event-type codes of paired_log


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


def paired_log(rng: np.random.Generator, n_users: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """movielens-poc's shape: each rated movie a click and, rated high (2 in 3), a watch at
    the same second; movies rated in bursts of 1-3 at one second, the burst's events in any
    order; the next burst later."""
    indptr, items, kinds, times = [0], [], [], []
    for _ in range(n_users):
        movies = list(rng.choice(500, size=rng.integers(5, 40), replace=False))
        t = int(rng.integers(0, 10**6))
        while movies:
            burst = movies[: rng.integers(1, 4)]
            movies = movies[len(burst) :]
            t += int(rng.integers(60, 5000))
            events = [(m, CLICK) for m in burst] + [(m, WATCH) for m in burst if rng.random() < 2 / 3]
            for i in rng.permutation(len(events)):
                items.append(events[i][0])
                kinds.append(events[i][1])
                times.append(t)
        indptr.append(len(items))
    return np.array(indptr), np.array(items), np.stack([np.array(kinds), np.array(times)], axis=1)
