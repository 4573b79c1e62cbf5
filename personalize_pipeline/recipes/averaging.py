"""Weight averaging as one named unit: the model kept after training is an exponential
moving average of the weights over the last ~1 / (1 - decay) optimiser steps.

The trajectory of small-batch Adam is noisy from step to step; its average ranks better
than any single point of it and removes most of the epoch-to-epoch jitter of the test
metric (Polyak & Juditsky 1992; Izmailov et al., "Averaging weights leads to wider optima",
2018). ``decay`` 0 keeps the last weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class WeightAverage:
    def __init__(self, params: list[torch.Tensor], decay: float):
        self.params = list(params)
        self.decay = float(decay)
        self.average = [p.detach().clone() for p in self.params] if self.decay > 0 else None
        self._update = torch.optim.swa_utils.get_ema_multi_avg_fn(self.decay) if self.decay > 0 else None

    def step(self) -> None:
        """Fold the current weights into the average (call after each optimiser step)."""
        if self.average is not None and self._update is not None:
            self._update(self.average, [p.detach() for p in self.params], None)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The averaged weights in place of the current ones for the ``with`` block (to score
        the model that training would keep now), the current ones back afterwards."""
        if self.average is None:
            yield
            return
        with torch.no_grad():
            current = [p.detach().clone() for p in self.params]
            for param, averaged in zip(self.params, self.average, strict=True):
                param.copy_(averaged)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, saved in zip(self.params, current, strict=True):
                    param.copy_(saved)

    @torch.no_grad()
    def apply(self) -> None:
        """Replace the weights by their average (the end of training)."""
        if self.average is not None:
            for param, averaged in zip(self.params, self.average, strict=True):
                param.copy_(averaged)


__all__ = ["WeightAverage"]
