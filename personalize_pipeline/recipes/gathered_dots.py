"""Logits of a few looked-up items per row, without materialising their vectors (CPU).

The impression term of aws-user-personalization scores, for each of a mini-batch's N
target events, the M items shown with it but not chosen: ``table[codes[n, m]] · states[n]``.
Written as a lookup and a product (``(F.embedding(codes, table) * states[:, None]).sum(-1)``)
autograd builds three [N, M, d] tensors (the looked-up vectors, the product, and the
gradient of the vectors) and scatters the last into a catalogue-sized gradient: about 25 ms
of a 145 ms training step on the 1M demo (8 impressions, width 149; bench/README, session
20). :class:`GatheredDots` runs the same sums in compiled loops (numba) straight from the
table: N × M dot products forward, and backward the two gradients accumulated in place, rows
whose incoming gradient is 0 (absent impressions) skipped. Other devices and dtypes (CUDA,
bf16 autocast) take the autograd expression.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numba import njit

FAST = {"nnan", "ninf", "nsz", "arcp", "contract", "reassoc", "afn"}


@njit(nogil=True, cache=True, fastmath=FAST)
def _dots(states: np.ndarray, table: np.ndarray, codes: np.ndarray, out: np.ndarray) -> None:
    n_rows, per_row = codes.shape
    width = states.shape[1]
    for i in range(n_rows):
        for j in range(per_row):
            row = table[codes[i, j]]
            total = np.float32(0.0)
            for k in range(width):
                total += row[k] * states[i, k]
            out[i, j] = total


@njit(nogil=True, cache=True, fastmath=FAST)
def _dots_backward(
    grad: np.ndarray,
    states: np.ndarray,
    table: np.ndarray,
    codes: np.ndarray,
    d_states: np.ndarray,
    d_table: np.ndarray,
) -> None:
    n_rows, per_row = codes.shape
    width = states.shape[1]
    for i in range(n_rows):
        for j in range(per_row):
            g = grad[i, j]
            if g == 0.0:
                continue
            c = codes[i, j]
            for k in range(width):
                d_states[i, k] += g * table[c, k]
                d_table[c, k] += g * states[i, k]


class GatheredDots(torch.autograd.Function):
    """``states`` [N, d], ``table`` [n, d], ``codes`` [N, M] (valid rows of ``table``) ->
    [N, M] with ``table[codes[i, j]] · states[i]`` (float32, CPU)."""

    @staticmethod
    def forward(ctx: Any, states: torch.Tensor, table: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        states, table = states.detach().contiguous(), table.detach().contiguous()
        codes = codes.contiguous()
        out = states.new_empty(codes.shape)
        _dots(states.numpy(), table.numpy(), codes.numpy(), out.numpy())
        ctx.save_for_backward(states, table, codes)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        states, table, codes = ctx.saved_tensors
        d_states, d_table = torch.zeros_like(states), torch.zeros_like(table)
        _dots_backward(
            grad.contiguous().numpy(), states.numpy(), table.numpy(), codes.numpy(), d_states.numpy(), d_table.numpy()
        )
        wanted = ctx.needs_input_grad
        return (d_states if wanted[0] else None, d_table if wanted[1] else None, None)


def gathered_dots(states: torch.Tensor, table: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """[N, M] logits ``table[codes] · states[:, None]``: compiled on CPU float32, the autograd
    expression elsewhere (both give the same values and gradients within float32 rounding)."""
    compiled = states.device.type == "cpu" and states.dtype == table.dtype == torch.float32
    if compiled and not torch.is_autocast_enabled("cpu"):
        if codes.numel() and not (0 <= int(codes.min()) and int(codes.max()) < table.shape[0]):
            raise IndexError(f"item rows outside the table of {table.shape[0]}")  # (as the lookup would)
        return GatheredDots.apply(states, table, codes)
    return (F.embedding(codes, table) * states.unsqueeze(1)).sum(-1)


__all__ = ["gathered_dots"]
