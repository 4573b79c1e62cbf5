"""Zero columns that make a float32 product's width a multiple of the CPU's register width.

MKL's float32 products whose width (the inner dimension forward, the output's backward) is
not a multiple of 8 run at about 60% of the speed of aligned ones on these CPUs: 8,192
states against 512 negatives take 17.0 ms for the three products of a training step on two
cores at width 43 (aws-hrnn's default) and 13.0 ms at width 48 (bench/README, session 16).
Zero columns add nothing to a product, and the gradients of the padded operands are cut
back to the real width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ALIGN = 8  # float32 lanes of an AVX2 register


def aligned(vectors: torch.Tensor, copy: bool = False) -> torch.Tensor:
    """[..., d] -> [..., d'] with zero columns up to a multiple of ``ALIGN`` (on the CPU;
    elsewhere, or when d is a multiple already, ``vectors`` itself, contiguous when ``copy``)."""
    pad = -vectors.shape[-1] % ALIGN
    if pad == 0 or vectors.device.type != "cpu":
        return vectors.contiguous() if copy else vectors
    return F.pad(vectors, (0, pad))
