"""The GRU of the GRU recipes over left-aligned training windows, with a hand-written
backward pass (the CPU training path).

``nn.GRU`` on a packed sequence is correct but costly to differentiate on the CPU: autograd
records about a dozen small operations per time step, and the backward of each step's slice
of the precomputed input projection zero-fills a tensor the size of the whole projection
(32 steps × 8,192 events × 3 × width floats per mini-batch at 10M events). Here the
forward pass runs the same equations (PyTorch's GRU: reset gate applied to the hidden
projection including its bias) over time-major windows sorted by length, keeps the gates,
and the backward pass walks the steps back with a handful of in-place operations each; the
weight gradients are then one product over all steps instead of one per step. The states
and gradients equal ``nn.GRU``'s within float32 rounding (tests/test_gru_layer.py); the
weights stay those of the network's ``nn.GRU`` (saved models do not change), which serves
inference and the GPU path. An aws-hrnn training step at 10M events (256 windows of 32
steps, width 43, two threads) took 55 ms with ``nn.GRU`` and 49 ms with this (bench/README,
session 16).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .alignment import aligned


class _WindowGRU(torch.autograd.Function):
    """One GRU layer over ``x`` [T, B, D] (time-major; rows sorted by length, longest
    first; ``batch_sizes[t]`` rows run at step t) from ``h0`` [B, H] -> states [T, B, H]
    (zeros after a row's end)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        h0: torch.Tensor,
        w_ih: torch.Tensor,
        w_hh: torch.Tensor,
        b_ih: torch.Tensor,
        b_hh: torch.Tensor,
        batch_sizes: list[int],
        input_width: int,
    ) -> torch.Tensor:
        steps, rows, _ = x.shape
        width = w_hh.shape[1]
        run = len(batch_sizes)
        w_ih = aligned(w_ih)  # as many zero columns as x has
        gi = torch.addmm(b_ih, x[:run].reshape(run * rows, -1), w_ih.T).view(run, rows, 3 * width)
        hs = x.new_zeros(steps + 1, rows, width)  # hs[t] = the state before step t
        hs[0] = h0
        gh = x.new_empty(run, rows, 3 * width)  # hidden projections (with their bias)
        rz = x.new_empty(run, rows, 2 * width)  # reset and update gates
        ns = x.new_empty(run, rows, width)  # candidate states
        _run_steps(batch_sizes, gi, hs, gh, rz, ns, w_hh, b_hh)
        ctx.save_for_backward(x, w_ih, w_hh, hs, rz, ns, gh)
        ctx.batch_sizes, ctx.input_width = batch_sizes, input_width
        return hs[1:]

    @staticmethod
    def backward(ctx: Any, d_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w_ih, w_hh, hs, rz, ns, gh = ctx.saved_tensors
        run, rows, width = ns.shape
        d_gi, d_ghn, d_h0 = _walk_back(ctx.batch_sizes, d_out.contiguous(), w_hh, hs, rz, ns, gh)
        flat_gi = d_gi.view(run * rows, 3 * width)
        flat_ghn = d_ghn.view(run * rows, width)
        inputs = x[:run].reshape(run * rows, -1)
        before = hs[:run].reshape(run * rows, width)
        d_x = x.new_zeros(x.shape)
        torch.mm(flat_gi, w_ih, out=d_x[:run].view(run * rows, -1))
        d_w_ih = (flat_gi.T @ inputs)[:, : ctx.input_width]
        # (a product whose output is `width` wide runs slower than its transpose)
        d_w_hh = torch.cat([before.T @ flat_gi[:, : 2 * width], before.T @ flat_ghn], dim=1).T
        d_b_hh = torch.cat([flat_gi[:, : 2 * width].sum(0), flat_ghn.sum(0)])
        return d_x, d_h0, d_w_ih, d_w_hh, flat_gi.sum(0), d_b_hh, None, None


def _run_steps(
    batch_sizes: list[int],
    gi: torch.Tensor,
    hs: torch.Tensor,
    gh: torch.Tensor,
    rz: torch.Tensor,
    ns: torch.Tensor,
    w_hh: torch.Tensor,
    b_hh: torch.Tensor,
) -> None:
    """The forward steps: fills the states ``hs[1:]``, hidden projections ``gh``, gates
    ``rz`` and candidates ``ns`` in place."""
    width = ns.shape[2]
    for t, n_rows in enumerate(batch_sizes):
        prev, g, gates, cand = hs[t, :n_rows], gh[t, :n_rows], rz[t, :n_rows], ns[t, :n_rows]
        torch.addmm(b_hh, prev, w_hh.T, out=g)
        torch.add(gi[t, :n_rows, : 2 * width], g[:, : 2 * width], out=gates).sigmoid_()
        torch.addcmul(gi[t, :n_rows, 2 * width :], gates[:, :width], g[:, 2 * width :], out=cand).tanh_()
        torch.lerp(cand, prev, gates[:, width:], out=hs[t + 1, :n_rows])  # (1 - z) n + z h_prev


def _walk_back(
    batch_sizes: list[int],
    d_out: torch.Tensor,
    w_hh: torch.Tensor,
    hs: torch.Tensor,
    rz: torch.Tensor,
    ns: torch.Tensor,
    gh: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of the input projections [T, B, 3H] (reset, update, candidate), of the
    candidate's hidden projection [T, B, H] and of the initial state [B, H]. The factors
    that do not depend on the incoming gradient are computed for every step at once."""
    run, rows, width = ns.shape
    reset, update = rz[..., :width], rz[..., width:]
    factors = torch.empty(run, rows, 2, width, dtype=ns.dtype, device=ns.device)
    torch.sub(hs[:run], ns, out=factors[:, :, 0]).mul_(update).mul_(1 - update)  # d update-gate input
    torch.mul(1 - update, 1 - ns * ns, out=factors[:, :, 1])  # d candidate input
    reset_factor = gh[..., 2 * width :] * reset * (1 - reset)  # d reset-gate input / d candidate input
    d_gi = ns.new_zeros(run, rows, 3 * width)
    d_ghn = ns.new_zeros(run, rows, width)
    # the state's gradient after and before a step, swapped each step; a row that has not
    # started (walking back) stays zero in both until its last step adds its output's
    d_h, d_before = ns.new_zeros(rows, width), ns.new_zeros(rows, width)
    w_rz, w_n = w_hh[: 2 * width], w_hh[2 * width :]
    for t in range(run - 1, -1, -1):
        n_rows = batch_sizes[t]
        dh, g = d_h[:n_rows], d_gi[t, :n_rows]
        dh.add_(d_out[t, :n_rows])
        torch.mul(dh.unsqueeze(1), factors[t, :n_rows], out=g[:, width:].view(n_rows, 2, width))
        torch.mul(g[:, 2 * width :], reset_factor[t, :n_rows], out=g[:, :width])
        torch.mul(g[:, 2 * width :], reset[t, :n_rows], out=d_ghn[t, :n_rows])
        torch.mul(dh, update[t, :n_rows], out=d_before[:n_rows])
        d_before[:n_rows].addmm_(g[:, : 2 * width], w_rz).addmm_(d_ghn[t, :n_rows], w_n)
        d_h, d_before = d_before, d_h
    return d_gi, d_ghn, d_h


def gru_over_windows(gru: nn.GRU, x: torch.Tensor, lengths: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """``gru`` (one layer, batch first) over [B, T, D] left-aligned windows whose first
    ``lengths`` [B] (at least 1, on the CPU) steps are real, from ``h0`` [1, B, H] or zeros
    -> [B, T, H] states, zeros on padding: what ``nn.GRU`` gives on the packed windows."""
    rows = x.shape[0]
    order = torch.argsort(lengths, descending=True, stable=True)
    counts = torch.bincount(lengths, minlength=int(lengths.max()) + 1)
    batch_sizes = (rows - torch.cumsum(counts, 0))[: len(counts) - 1].tolist()
    start = h0[0][order] if h0 is not None else x.new_zeros(rows, gru.hidden_size)
    states = _WindowGRU.apply(
        aligned(x[order].transpose(0, 1), copy=True),  # zero columns: see .alignment
        start,
        gru.weight_ih_l0,
        gru.weight_hh_l0,
        gru.bias_ih_l0,
        gru.bias_hh_l0,
        batch_sizes,
        x.shape[2],
    )
    return states.transpose(0, 1)[torch.argsort(order)]


__all__ = ["gru_over_windows"]
