"""Dropout whose mask comes from raw random bits instead of ``torch.bernoulli_``.

On the CPU, ``nn.Dropout`` draws its mask with ``bernoulli_``, about 8 ms for a [256 x 32,
149] activation on one thread here: 9% of an aws-user-personalization training step, the
largest single elementwise cost (bench/README). Comparing uniform draws with the rate gives
the same distribution (each unit kept with probability 1 - p, scaled by 1 / (1 - p)); the
cheapest uniform draws torch has are whole 64-bit words (``random_``), four 16-bit uniforms
each, about 3x faster than ``rand`` floats (which were themselves 3x faster than
``bernoulli_``). The rate is then a multiple of 1 / 65536 (0.1 acts as 0.100006); only the
random numbers differ from ``nn.Dropout``'s.
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
        words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device)
        uniform16 = words.random_(-(2**63), None).view(torch.int16)[: x.numel()].view(x.shape)
        keep = (uniform16 >= round(self.p * 65536) - 32768).to(x.dtype).mul_(1.0 / (1.0 - self.p))
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


__all__ = ["UniformMaskDropout"]
