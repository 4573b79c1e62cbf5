"""Thompson draws of click-through rates from tabulated Beta quantiles.

Exploration (aws-user-personalization's ``itemExplorationConfig``) draws, for every user and
every young item, a click-through rate from the item's Beta(α, β) posterior. numpy's
``Generator.beta`` costs about 70 ns a draw here (ratios of two Gamma draws, rejection for
small parameters): 45 us per user at 662 young items, more than scoring the whole 10k-item
catalogue. The parameters are the same for every user of a job, so the draws are made by
inverse transform sampling from a table instead: each item's quantile function is
tabulated once (``scipy.special.betaincinv``, once per distinct (α, β)) on a grid that is
uniform in logit(u), so that both tails get as many points as the middle, and a draw is a
uniform u, its logit, and a linear interpolation of log θ between two grid points (a
compiled loop, :func:`.block_kernels.interpolate_log_quantiles`: a few ns a draw). The
draws follow the Beta distribution up to the interpolation between grid points (log θ is
smooth in logit(u), tails included, where it is close to linear) and u beyond the grid's
ends (probability 2 × 8e-7), which take the end points' quantiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import betaincinv, expit

GRID = 513  # grid points of each item's quantile function
LOGIT_RANGE = 14.0  # the grid spans logit(u) in [-LOGIT_RANGE, LOGIT_RANGE]


@dataclass(frozen=True)
class BetaQuantiles:
    """[items, GRID] float32 log-quantiles of each item's Beta(α, β)."""

    log_quantiles: np.ndarray

    @classmethod
    def of(cls, alpha: np.ndarray, beta: np.ndarray) -> BetaQuantiles:
        """The table of Beta(``alpha[i]``, ``beta[i]``) (both > 0), computed once for each
        distinct pair."""
        pairs, inverse = np.unique(np.c_[alpha, beta], axis=0, return_inverse=True)
        u = expit(np.linspace(-LOGIT_RANGE, LOGIT_RANGE, GRID))
        with np.errstate(divide="ignore"):
            table = np.log(betaincinv(pairs[:, :1], pairs[:, 1:], u[None, :]))
        table = np.maximum(table, np.log(np.finfo(np.float32).tiny))  # quantiles that underflow to 0
        return cls(table[np.asarray(inverse).reshape(-1)].astype(np.float32))

    def log_draws(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """[n, items] float32 draws of log θ, one row per user."""
        from .block_kernels import interpolate_log_quantiles

        u = rng.random((n, len(self.log_quantiles)), dtype=np.float32)
        out = np.subtract(np.float32(1), u)
        with np.errstate(divide="ignore"):  # logit(u) in place: fresh temporaries cost more than the log
            np.log(np.divide(u, out, out=out), out=out)
        scale = (GRID - 1) / (2 * LOGIT_RANGE)
        interpolate_log_quantiles(out, self.log_quantiles, -LOGIT_RANGE, scale, out)  # (element by element)
        return out


__all__ = ["BetaQuantiles", "GRID", "LOGIT_RANGE"]
