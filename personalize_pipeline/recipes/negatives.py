"""Negative sampling for sampled-softmax training, as one named unit.

:class:`PopularitySampler` draws the negatives that a mini-batch shares (GRU4Rec's shared
mini-batch negatives; its official code keeps them in a ``SampleCache``): items are drawn
with probability proportional to ``count ** alpha`` (``alpha`` 0 = uniform, 1 = popularity),
many mini-batches' worth at once so that drawing costs one vectorised call per
``cache_batches`` steps. ``log_q`` is the log of each item's expected number of draws per
mini-batch, the correction a sampled softmax subtracts from the logits so that it estimates
the full softmax without the popularity bias of the sample (Bengio & Senécal 2008;
Yi et al., "Sampling-bias-corrected neural modeling", RecSys 2019).
"""

from __future__ import annotations

import numpy as np
import torch


class PopularitySampler:
    def __init__(
        self, counts: np.ndarray, n_sample: int, alpha: float, rng: np.random.Generator, cache_batches: int = 64
    ):
        q = np.asarray(counts, dtype=np.float64) ** alpha
        q[np.asarray(counts) <= 0] = 0.0  # items never seen are never drawn
        if q.sum() <= 0:
            q = np.ones(len(q))
        q /= q.sum()
        self.n_sample = int(n_sample)
        self.rng = rng
        self.cache_batches = cache_batches
        self._cum = np.cumsum(q)
        self._cache = np.empty((0, self.n_sample), dtype=np.int64)
        self._next = 0
        self.log_q = torch.from_numpy(np.log(np.maximum(q * self.n_sample, 1e-12))).float()

    def draw(self) -> torch.Tensor:
        """The next mini-batch's ``n_sample`` negative item codes (int64)."""
        if self._next >= len(self._cache):
            u = self.rng.random((self.cache_batches, self.n_sample))
            self._cache = np.minimum(np.searchsorted(self._cum, u), len(self._cum) - 1).astype(np.int64)
            self._next = 0
        out = torch.from_numpy(self._cache[self._next])
        self._next += 1
        return out


__all__ = ["PopularitySampler"]
