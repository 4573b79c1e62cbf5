"""Training losses of the neural recipes, one function each (named as the official GRU4Rec
code names its losses). Every function returns the loss of each target event (a vector), so
the caller chooses the weighting (recency masks, padding) and the reduction.

- :func:`full_softmax_xe`: cross-entropy of the target against every item of the catalogue.
  The strongest training signal for next-item models (Klenitskiy & Vasilev, "Turning
  dross into gold loss: is BERT4Rec really better than SASRec?", RecSys 2023: SASRec with
  this loss, "SASRec+", beats BERT4Rec and the BCE-trained original); it costs
  catalogue × width per event, so it is for catalogues that fit.
- :func:`sampled_softmax_xe_logq`: the same against the target plus negatives shared by the
  mini-batch, with every logit corrected by ``log Q`` (the expected number of draws of the
  item), which makes it an estimate of the full softmax for large catalogues (GRU4Rec;
  gSASRec, Petrov & Macdonald, RecSys 2023, show that many negatives and a correction of
  the sampling's overconfidence close most of the gap to the full softmax). Outside bf16
  autocast its normaliser over the negatives has its own forward and backward pass
  (:class:`_NegativesLogSumExp`: one [N, S] buffer instead of four).
- :func:`impression_pairwise`: a BPR term asking the chosen item to score above each item
  that was shown with the event but not chosen (Personalize's impressions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .alignment import aligned


def full_softmax_xe(
    states: torch.Tensor, item_vectors: torch.Tensor, targets: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """[N, d] states, [n_items, d] item vectors, [N] target codes -> [N] cross-entropies.

    In float32 the normaliser over the catalogue is :class:`_NegativesLogSumExp` (one
    [N, n_items] buffer, exp and gradient in place, aligned products) and the target's
    logit a row-wise product: ``F.cross_entropy`` made a log-softmax copy and its own
    gradient tensor, 7.7 of a 52 ms aws-user-personalization-v2 step on amazon-beauty.
    Under bf16 autocast the [N, n_items] logits stay in bf16 through the log-softmax (which
    accumulates in float32 internally): autocast would otherwise cast them to float32 for
    the cross-entropy, and that copy and the float32 softmax over the catalogue cost about
    2.5x the bf16 one (bench/README); the gradient's 3 significant digits are plenty."""
    if not torch.is_autocast_enabled(states.device.type):
        bias = states.new_zeros(item_vectors.shape[0]) if bias is None else bias
        target_logit = (states * item_vectors[targets]).sum(-1) + bias[targets]
        return _NegativesLogSumExp.apply(states, item_vectors, bias) - target_logit
    logits = states @ item_vectors.T
    if bias is not None:
        logits = logits + bias
    with torch.autocast(logits.device.type, enabled=False):
        return F.cross_entropy(logits, targets, reduction="none").float()


def sampled_softmax_xe_logq(
    states: torch.Tensor,
    pos_vectors: torch.Tensor,
    neg_vectors: torch.Tensor,
    pos_bias: torch.Tensor,
    neg_bias: torch.Tensor,
) -> torch.Tensor:
    """Cross-entropy of each positive against itself and the shared negatives.

    ``pos_bias`` [N] and ``neg_bias`` [S] already hold ``bias - log Q`` of those items. The
    concatenation of the logits is never materialised; accidental hits (a negative that is
    the positive) are rare and left in, as in GRU4Rec."""
    pos_logit = (states * pos_vectors).sum(-1) + pos_bias
    if torch.is_autocast_enabled(states.device.type):  # bf16 products, float32 normaliser
        neg_logit = torch.addmm(neg_bias, states, neg_vectors.T)  # [N, S], one fused op
        neg_lse = torch.logsumexp(neg_logit.float(), dim=1)
    else:
        neg_lse = _NegativesLogSumExp.apply(states, neg_vectors, neg_bias)
    return torch.logaddexp(pos_logit, neg_lse) - pos_logit


class _NegativesLogSumExp(torch.autograd.Function):
    """[N] log-sum-exp of ``states @ neg_vectors.T + neg_bias`` over the shared negatives,
    with one [N, S] buffer: the forward pass turns the logits into ``exp(logit - row max)``
    in place and keeps it; the backward pass scales it in place into the logits' gradient
    (softmax times the incoming gradient) for the two products. Autograd's logsumexp makes
    three more [N, S] tensors (shifted, exp, product) and passes over them: 8,192 targets
    against 512 negatives, forward and backward, took 30-34 ms that way and 15-22 ms this
    way on two cores (an aws-hrnn step at 10M events: 5.3 of about 42 ms in those passes,
    2.4 now; bench/README, session 14). The buffer is consumed by the backward pass (no
    second backward through the same graph). The products take the vectors with zero
    columns up to a multiple of 8 (:mod:`.alignment`; session 16)."""

    @staticmethod
    def forward(ctx, states: torch.Tensor, neg_vectors: torch.Tensor, neg_bias: torch.Tensor) -> torch.Tensor:
        width = states.shape[1]
        states, neg_vectors = aligned(states), aligned(neg_vectors)
        buffer = torch.addmm(neg_bias, states, neg_vectors.T)  # [N, S]
        peak = buffer.amax(dim=1, keepdim=True)
        peak.masked_fill_(~torch.isfinite(peak), 0.0)  # a row of -inf stays -inf, not nan
        total = buffer.sub_(peak).exp_().sum(dim=1, keepdim=True)
        ctx.save_for_backward(states, neg_vectors, buffer, total)
        ctx.width = width
        return (total.log() + peak).squeeze(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        states, neg_vectors, buffer, total = ctx.saved_tensors
        grad_logits = buffer.mul_(grad.unsqueeze(1) / total.clamp(min=1e-30))  # softmax * grad, in place
        wanted = ctx.needs_input_grad  # (an UPDATE's item-side refresh: no gradient for the states)
        width = ctx.width
        return (
            (grad_logits @ neg_vectors)[:, :width] if wanted[0] else None,
            (grad_logits.T @ states)[:, :width] if wanted[1] else None,
            grad_logits.sum(0) if wanted[2] else None,
        )


def impression_pairwise(pos_logit: torch.Tensor, shown_logit: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """[N] positive logits, [N, M] logits of shown-but-ignored items, [N, M] 0/1 presence ->
    [N] mean softplus(shown - positive) over the present items (0 where none)."""
    pairwise = F.softplus(shown_logit - pos_logit[:, None]) * present
    return pairwise.sum(1) / present.sum(1).clamp(min=1.0)


__all__ = ["full_softmax_xe", "sampled_softmax_xe_logq", "impression_pairwise"]
