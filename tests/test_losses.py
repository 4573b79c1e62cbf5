"""The sampled softmax's own forward/backward and the dropout mask: the same values and
gradients as the plain autograd formulas they replace."""

import pytest
import torch
import torch.nn.functional as F

from personalize_pipeline.recipes.dropout import UniformMaskDropout
from personalize_pipeline.recipes.gathered_dots import gathered_dots
from personalize_pipeline.recipes.losses import full_softmax_xe, sampled_softmax_xe_logq


def _autograd_reference(states, pos_vectors, neg_vectors, pos_bias, neg_bias):
    pos_logit = (states * pos_vectors).sum(-1) + pos_bias
    neg_logit = states @ neg_vectors.T + neg_bias
    return torch.logaddexp(pos_logit, torch.logsumexp(neg_logit, dim=1)) - pos_logit


def _inputs(n=300, s=40, d=8):
    torch.manual_seed(0)
    shapes = [(n, d), (n, d), (s, d), (n,), (s,)]
    return [(torch.randn(*shape) * 3).requires_grad_() for shape in shapes]


def _loss_and_grads(fn, inputs, weights):
    for tensor in inputs:
        tensor.grad = None
    loss = fn(*inputs)
    (loss * weights).sum().backward()
    return [loss.detach()] + [tensor.grad.clone() for tensor in inputs]


@pytest.mark.parametrize("width", [8, 43])  # 43: zero columns up to 48 inside the products
def test_sampled_softmax_has_the_values_and_gradients_of_autograds_logsumexp(width):
    inputs = _inputs(d=width)
    weights = torch.rand(300)
    ours = _loss_and_grads(sampled_softmax_xe_logq, inputs, weights)
    reference = _loss_and_grads(_autograd_reference, inputs, weights)
    for a, b in zip(ours, reference, strict=True):  # (gradients up to 30: float32 sums of 43 terms)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("width, with_bias", [(8, True), (43, False)])
def test_full_softmax_has_the_values_and_gradients_of_cross_entropy(width, with_bias):
    torch.manual_seed(1)
    states, vectors = torch.randn(200, width).requires_grad_(), torch.randn(70, width).requires_grad_()
    bias = torch.randn(70).requires_grad_() if with_bias else None
    targets = torch.randint(0, 70, (200,))
    weights = torch.rand(200)
    inputs = [states, vectors] + ([bias] if bias is not None else [])

    def reference(*args):
        logits = args[0] @ args[1].T + (args[2] if len(args) > 2 else 0.0)
        return F.cross_entropy(logits, targets, reduction="none")

    ours = _loss_and_grads(lambda *args: full_softmax_xe(args[0], args[1], targets, *args[2:]), inputs, weights)
    for a, b in zip(ours, _loss_and_grads(reference, inputs, weights), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_sampled_softmax_with_negatives_ruled_out():
    """Negatives at -inf (bias) take no mass and get no gradient; a row where all are
    -inf leaves the positive alone (loss 0), with no nan."""
    states, pos_vectors, neg_vectors, pos_bias, neg_bias = _inputs(n=5, s=4, d=3)
    ruled_out = torch.tensor([0.0, -float("inf"), 0.0, -float("inf")])
    loss = sampled_softmax_xe_logq(states, pos_vectors, neg_vectors, pos_bias, neg_bias.detach() + ruled_out)
    reference = _autograd_reference(states, pos_vectors, neg_vectors, pos_bias, neg_bias.detach() + ruled_out)
    torch.testing.assert_close(loss, reference)
    loss.sum().backward()
    assert torch.isfinite(states.grad).all() and torch.isfinite(neg_vectors.grad).all()
    assert torch.equal(neg_vectors.grad[[1, 3]], torch.zeros(2, 3))
    neg_vectors.grad = None
    nothing = sampled_softmax_xe_logq(states, pos_vectors, neg_vectors, pos_bias, torch.full((4,), -float("inf")))
    torch.testing.assert_close(nothing, torch.zeros(5))
    nothing.sum().backward()  # the backward pass divides by the negatives' total mass, here 0
    assert torch.equal(neg_vectors.grad, torch.zeros(4, 3))


def test_dropout_keeps_each_unit_with_probability_one_minus_p_and_rescales():
    drop = UniformMaskDropout(0.25).train()
    out = drop(torch.ones(400, 500))
    kept = out > 0
    assert abs(float(kept.float().mean()) - 0.75) < 0.005
    assert torch.allclose(out[kept], torch.full((int(kept.sum()),), 1 / 0.75))
    assert not torch.equal(drop(torch.ones(400, 500)), out)  # a new mask every call
    assert torch.equal(drop.eval()(torch.ones(3, 3)), torch.ones(3, 3))
    odd = UniformMaskDropout(0.5).train()(torch.ones(3, 7))  # sizes that are not whole words
    assert odd.shape == (3, 7) and set(odd.unique().tolist()) <= {0.0, 2.0}


def test_sampled_softmax_without_a_gradient_for_the_states():
    """An UPDATE's item-side refresh computes the states without gradients."""
    states, pos_vectors, neg_vectors, pos_bias, neg_bias = _inputs(n=20, s=6, d=4)
    fixed = states.detach()
    sampled_softmax_xe_logq(fixed, pos_vectors, neg_vectors, pos_bias, neg_bias).sum().backward()
    reference = neg_vectors.grad.clone()
    neg_vectors.grad = None
    _autograd_reference(fixed, pos_vectors, neg_vectors, pos_bias, neg_bias).sum().backward()
    torch.testing.assert_close(reference, neg_vectors.grad)


@pytest.mark.parametrize("width", [8, 149])
def test_gathered_dots_have_the_values_and_gradients_of_lookup_and_product(width):
    # the impression term's logits: compiled from the table, as the lookup-and-product
    # autograd expression; codes repeat (gradients accumulate) and a zero incoming gradient
    # (an absent impression) is skipped without changing the sums
    torch.manual_seed(2)
    states, table = torch.randn(300, width).requires_grad_(), torch.randn(50, width).requires_grad_()
    codes = torch.randint(0, 50, (300, 6))
    weights = torch.rand(300, 6) * (torch.rand(300, 6) < 0.8)

    def reference(s, t):
        return (F.embedding(codes, t) * s.unsqueeze(1)).sum(-1)

    ours = _loss_and_grads(lambda s, t: gathered_dots(s, t, codes), [states, table], weights)
    for a, b in zip(ours, _loss_and_grads(reference, [states, table], weights), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    with pytest.raises(IndexError):  # a code outside the table fails, as the lookup does
        gathered_dots(states, table, torch.full((300, 6), -1))
