"""The repeat head (recipes/repeat_head.py): which of a user's items comes back, learnt from
the event types and times of their history."""

import numpy as np
from repeat_checks import CLICK, WATCH, paired_log

from personalize_pipeline.recipes.repeat_head import (
    COUNT_EDGES,
    DEPTH,
    EXPLORE,
    GAP_EDGES,
    KIND_BITS,
    N_COUNTS,
    N_GAPS,
    N_PATTERNS,
    RepeatHead,
    _examples,
    _kind_bits,
    _kinds_times,
    fit_repeat_head,
)


def _state_of(events: list[tuple[int, int, int]]) -> dict[int, tuple[int, int, int]]:
    """item -> (newest time, flags of its event types at that time, events) after ``events``
    ((item, flag, time), oldest first)."""
    state: dict[int, tuple[int, int, int]] = {}
    for item, flag, time in events:
        last, pattern, count = state.get(item, (None, 0, 0))
        state[item] = (time, (pattern | flag) if last == time else flag, count + 1)
    return state


def _newest_first(events: list[tuple[int, int, int]]) -> list[int]:
    return list(dict.fromkeys(item for item, _, _ in reversed(events)))


def _bucket(value: int, edges: np.ndarray) -> int:
    return int(np.searchsorted(edges, value, side="left"))


def _cell(state: tuple[int, int, int], now: int) -> tuple[int, int]:
    last, pattern, count = state
    return pattern * N_GAPS + _bucket(now - last, GAP_EDGES), _bucket(count, COUNT_EDGES)


def _random_log(rng: np.random.Generator, n_users: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, items, signals) of users with repeats, shared timestamps and 6 event types."""
    lengths = rng.integers(0, 60, size=n_users)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    items = rng.integers(0, 30, size=int(lengths.sum()))
    steps = rng.choice([0, 0, 30, 600, 7200, 200_000, 10**6], size=len(items))
    times = np.cumsum(steps)
    kinds = rng.integers(-1, 6, size=len(items))
    return indptr, items, np.stack([kinds, times], axis=1)


def test_the_examples_describe_each_users_newest_distinct_items_before_each_event():
    indptr, items, signals = _random_log(np.random.default_rng(4), 40)
    kind_bits = _kind_bits(signals[:, 0])
    flags, times = _kinds_times(signals, kind_bits)
    n = len(items)
    features, filled = np.zeros((n, DEPTH, 2), dtype=np.int16), np.zeros(n, dtype=np.int16)
    tail, target = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    keep = np.ones(n, dtype=bool)
    made = _examples(indptr, items, flags, times, 30, keep, GAP_EDGES, COUNT_EDGES, features, filled, tail, target)
    e = 0
    for u in range(len(indptr) - 1):
        events = [(int(items[i]), int(flags[i]), int(times[i])) for i in range(indptr[u], indptr[u + 1])]
        for t in range(1, len(events)):
            before = events[:t]
            order, state = _newest_first(before), _state_of(before)
            slots = order[:DEPTH]
            assert filled[e] == len(slots) and tail[e] == len(order) - len(slots)
            for s, item in enumerate(slots):
                assert tuple(features[e, s]) == _cell(state[item], before[-1][2])
            item = events[t][0]
            expected = order.index(item) if item in slots else (DEPTH if item in order else EXPLORE)
            assert target[e] == expected
            e += 1
    assert made == e


def _reference_weights(head: RepeatHead, events: list[tuple[int, int, int]]) -> tuple[list[int], np.ndarray, float]:
    order, state = _newest_first(events), _state_of(events)
    now = events[-1][2]
    scores = []
    for rank, item in enumerate(order):
        score = head.rank[min(rank, DEPTH)]
        if rank < DEPTH:
            cell, count = _cell(state[item], now)
            score += head.kind_gap[cell] + head.count[count]
        scores.append(score)
    weights = np.exp(np.array(scores))
    return order, weights, 1.0 - 1.0 / (1.0 + weights.sum())


def test_a_heads_weights_and_shares_follow_its_scores_of_each_rows_items():
    rng = np.random.default_rng(8)
    indptr, items, signals = _random_log(rng, 30)
    head = RepeatHead(
        rng.normal(size=DEPTH + 1),
        rng.normal(size=N_PATTERNS * N_GAPS),
        rng.normal(size=N_COUNTS),
        _kind_bits(signals[:, 0]),
    )
    rows = np.repeat(np.arange(30), np.diff(indptr))
    got_rows, got_items, got_weights, got_shares = head.weights(rows, items, signals)
    flags, times = _kinds_times(signals, head.kind_bits)
    for u in range(30):
        at = got_rows == u
        if indptr[u] == indptr[u + 1]:
            assert not at.any()
            continue
        events = [(int(items[i]), int(flags[i]), int(times[i])) for i in range(indptr[u], indptr[u + 1])]
        order, weights, share = _reference_weights(head, events)
        assert got_items[at].tolist() == order
        np.testing.assert_allclose(got_weights[at], weights, rtol=1e-12)
        np.testing.assert_allclose(got_shares[at], share, rtol=1e-12)


def test_rare_event_types_share_the_last_bit():
    codes = np.array([4, 4, 4, 2, 2, 0, 1, 1, 1, 1, -1])
    bits = _kind_bits(codes)
    assert bits[1] == 0 and bits[4] == 1 and bits[2] == 2  # by frequency
    assert bits[0] == KIND_BITS - 1 and bits[3] == KIND_BITS - 1  # rarer, and never seen
    flags, _ = _kinds_times(np.stack([np.array([1, 9, -1, 0]), np.zeros(4, dtype=np.int64)], 1), bits)
    assert flags.tolist() == [1, 1 << (KIND_BITS - 1), 1 << (KIND_BITS - 1), 1 << (KIND_BITS - 1)]


def test_the_fit_learns_that_an_open_pair_is_completed_and_a_closed_one_is_not():
    indptr, items, signals = paired_log(np.random.default_rng(0), 600)
    head = fit_repeat_head(indptr, items, signals)
    assert head is not None
    # user 0: movie 7 watched at t=100 (its click still to come), movie 8 clicked and watched
    # after at t=100; user 1: movie 7 and 8 both clicked and watched; user 2: movie 9 only
    # clicked at the newest time (rated low, or its watch still to come)
    rows = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    hist = np.array([7, 8, 8, 7, 7, 8, 8, 7, 7, 9])
    kinds = np.array([WATCH, CLICK, WATCH, CLICK, WATCH, WATCH, CLICK, CLICK, WATCH, CLICK])
    times = np.array([100, 100, 100, 40, 40, 100, 100, 40, 40, 100])
    got_rows, got_items, weights, shares = head.weights(rows, hist, np.stack([kinds, times], 1))
    first = {int(r): int(got_items[got_rows == r][np.argmax(weights[got_rows == r])]) for r in range(3)}
    share = {int(r): float(shares[got_rows == r][0]) for r in range(3)}
    assert first[0] == 7  # the open pair, though not the newest item
    # its click is certain, though another movie of the burst may come before it
    assert share[0] > 0.6
    assert share[1] < 0.05  # every pair closed: the next movie is a new one
    assert first[2] == 9 and 0.1 < share[2] < share[0]  # a click is followed by a watch or not


def test_nothing_to_learn_without_repeats():
    indptr = np.array([0, 3, 5])
    items = np.array([0, 1, 2, 0, 1])
    signals = np.stack([np.zeros(5, dtype=np.int64), np.arange(5)], 1)
    assert fit_repeat_head(indptr, items, signals) is None
