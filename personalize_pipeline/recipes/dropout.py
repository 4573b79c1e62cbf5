"""Dropout whose mask comes from uniform draws instead of ``torch.bernoulli_``.

On the CPU, ``nn.Dropout`` draws its mask with ``bernoulli_``, about 8 ms for a [256 x 32,
149] activation on one thread here: 9% of an aws-user-personalization training step, the
largest single elementwise cost (bench/README). Comparing ``rand`` draws with the rate gives
the same distribution (each unit kept with probability 1 - p, scaled by 1 / (1 - p)) in
about a third of the time; only the random numbers differ from ``nn.Dropout``'s.
"""

from __future__ import annotations

import torch
from torch import nn


class UniformMaskDropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = (torch.rand_like(x) >= self.p).to(x.dtype).mul_(1.0 / (1.0 - self.p))
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


__all__ = ["UniformMaskDropout"]
