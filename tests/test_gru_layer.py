"""The hand-written GRU over left-aligned windows (recipes/gru_layer.py) against nn.GRU on
the packed windows: states, gradients of inputs, weights and initial state."""

import pytest
import torch
from torch import nn

from personalize_pipeline.recipes.gru_layer import gru_over_windows


def packed_reference(gru: nn.GRU, x: torch.Tensor, lengths: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = gru(packed, h0)
    return nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


def states_and_gradients(run, gru: nn.GRU, x: torch.Tensor, lengths, h0, weight) -> list[torch.Tensor]:
    for p in [*gru.parameters(), x, h0]:
        if p is not None:
            p.grad = None
    states = run(gru, x, lengths, h0)
    (states * weight).sum().backward()
    grads = [x.grad, *(p.grad for p in gru.parameters())]
    if h0 is not None:
        grads.append(h0.grad)
    return [states.detach(), *grads]


@pytest.mark.parametrize("with_h0", [False, True])
def test_states_and_gradients_equal_the_packed_nn_gru(with_h0: bool) -> None:
    torch.manual_seed(3)
    rows, steps, width = 37, 9, 13
    gru = nn.GRU(width, width, batch_first=True)
    with torch.no_grad():
        gru.bias_hh_l0.uniform_(-0.5, 0.5)  # a nonzero hidden bias: the reset gate multiplies it
    lengths = torch.randint(1, steps + 1, (rows,))
    lengths[5] = steps  # some rows run every step, in no particular order
    x = torch.randn(rows, steps, width, requires_grad=True)
    h0 = torch.randn(1, rows, width, requires_grad=True) if with_h0 else None
    weight = torch.randn(rows, steps, width)  # a loss that weighs every state differently

    expected = states_and_gradients(packed_reference, gru, x, lengths, h0, weight)
    got = states_and_gradients(gru_over_windows, gru, x, lengths, h0, weight)

    padding = torch.arange(steps)[None, :] >= lengths[:, None]
    assert bool((got[0][padding] == 0).all())  # no state after a window's end
    assert bool((got[1][padding] == 0).all())  # and no gradient into its padded inputs
    names = ["states", "inputs", "w_ih", "w_hh", "b_ih", "b_hh", "h0"]
    for name, a, b in zip(names, got, expected, strict=False):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_one_step_windows_and_a_single_row() -> None:
    torch.manual_seed(0)
    gru = nn.GRU(4, 4, batch_first=True)
    for lengths in (torch.tensor([1, 1, 1]), torch.tensor([3])):
        x = torch.randn(len(lengths), 3, 4, requires_grad=True)
        weight = torch.randn(len(lengths), 3, 4)
        got = states_and_gradients(gru_over_windows, gru, x, lengths, None, weight)
        expected = states_and_gradients(packed_reference, gru, x, lengths, None, weight)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
