"""Who will be active next: recency-weighted event counts, the half-life chosen on the data.

A user's *recent* activity predicts their next period's activity far better than their
lifetime count where users come and go (movielens: many users rate a burst of films and
never return). The activity of user ``u`` at time ``now``::

    act(u) = sum over the user's events e of  2 ** (-(now - t_e) / half_life)

``half_life = inf`` gives the lifetime count; a very short one ranks users by their last
event. Kept as ``log act(u)`` (a log-sum-exp per user), so short half-lives over long
histories do not underflow to 0.

:func:`choose_half_life` picks the half-life on the training events alone: it holds out the
latest ``VALIDATION_SHARE`` of them, computes ``act`` at the start of that window from the
earlier events for each candidate (the earlier span times ``2 ** -k``, k = 0..12, and the
lifetime count), and keeps the candidate whose ranking of the users seen before the window
has the highest average precision for "active in the window" (ties: the longer half-life).
So data where users churn get a short half-life and stationary data (every user active all
along) keep long ones or lifetime counts, without a constant tuned to one split.
"""

from __future__ import annotations

import numpy as np

VALIDATION_SHARE = 0.1  # latest share of training events that judges the candidates
HALVINGS = 13  # candidates: the span, its half, ..., 1 / 4096 of it, plus inf
SECONDS_PER_DAY = 86_400.0


def last_times(users: np.ndarray, times: np.ndarray, n_users: int) -> np.ndarray:
    """float64 [n_users]: each user's latest event time (``-inf`` without events)."""
    last = np.full(n_users, -np.inf)
    np.maximum.at(last, users, times.astype(np.float64))
    return last


def log_activity(
    users: np.ndarray,
    times: np.ndarray,
    n_users: int,
    half_life: float,
    now: float,
    last: np.ndarray | None = None,
) -> np.ndarray:
    """float64 [n_users]: ``log act(u)`` at ``now`` (``-inf`` for users without events);
    ``last``: :func:`last_times` of these events, when already known."""
    if np.isinf(half_life):
        with np.errstate(divide="ignore"):
            return np.log(np.bincount(users, minlength=n_users).astype(np.float64))
    rate = np.log(2) / half_life
    last = last_times(users, times, n_users) if last is None else last
    peak = -(now - last) * rate  # each user's largest term, factored out: no underflow
    terms = np.exp(-(now - times.astype(np.float64)) * rate - peak[users])
    total = np.bincount(users, weights=terms, minlength=n_users)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, peak + np.log(total), -np.inf)


def average_precision(score: np.ndarray, truth: np.ndarray) -> float:
    """Average precision of ranking all users by ``score`` (ties: lower code first) for ``truth``."""
    order = np.lexsort((np.arange(len(score)), -score))
    hits = truth[order]
    positions = np.flatnonzero(hits) + 1
    return float((np.arange(1, len(positions) + 1) / positions).mean()) if len(positions) else 0.0


def choose_half_life(users: np.ndarray, times: np.ndarray, n_users: int) -> float:
    """The half-life (seconds, or ``inf`` = lifetime counts) whose activity before the latest
    ``VALIDATION_SHARE`` of events best ranks the users active in them (average precision).
    ``inf`` when the events do not allow the test (one timestamp, no earlier events)."""
    times = times.astype(np.float64)
    if len(times) == 0:
        return float("inf")
    cutoff = float(np.quantile(times, 1.0 - VALIDATION_SHARE))
    before = times < cutoff
    if not before.any() or before.all():
        return float("inf")
    span = cutoff - float(times[before].min())
    candidates = [float("inf")] + ([span * 2.0**-k for k in range(HALVINGS)] if span > 0 else [])
    early_users, early_times = users[before], times[before]
    last = last_times(early_users, early_times, n_users)
    known = np.isfinite(last)  # users first seen in the window rank under any candidate: left out
    truth = (np.bincount(users[~before], minlength=n_users) > 0)[known]
    quality = [
        average_precision(log_activity(early_users, early_times, n_users, h, cutoff, last)[known], truth)
        for h in candidates
    ]
    return candidates[int(np.argmax(quality))]  # ties: the longer half-life (earlier candidate)


__all__ = ["last_times", "log_activity", "average_precision", "choose_half_life", "VALIDATION_SHARE", "SECONDS_PER_DAY"]
