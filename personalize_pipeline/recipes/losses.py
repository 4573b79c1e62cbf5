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
  the sampling's overconfidence close most of the gap to the full softmax).
- :func:`impression_pairwise`: a BPR term asking the chosen item to score above each item
  that was shown with the event but not chosen (Personalize's impressions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def full_softmax_xe(
    states: torch.Tensor, item_vectors: torch.Tensor, targets: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """[N, d] states, [n_items, d] item vectors, [N] target codes -> [N] cross-entropies.

    Under bf16 autocast the [N, n_items] logits stay in bf16 through the log-softmax (which
    accumulates in float32 internally): autocast would otherwise cast them to float32 for
    the cross-entropy, and that copy and the float32 softmax over the catalogue cost about
    2.5x the bf16 one (bench/README); the gradient's 3 significant digits are plenty."""
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
    neg_logit = torch.addmm(neg_bias, states, neg_vectors.T)  # [N, S], one fused op
    return torch.logaddexp(pos_logit, torch.logsumexp(neg_logit.float(), dim=1)) - pos_logit


def impression_pairwise(pos_logit: torch.Tensor, shown_logit: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """[N] positive logits, [N, M] logits of shown-but-ignored items, [N, M] 0/1 presence ->
    [N] mean softplus(shown - positive) over the present items (0 where none)."""
    pairwise = F.softplus(shown_logit - pos_logit[:, None]) * present
    return pairwise.sum(1) / present.sum(1).clamp(min=1.0)


__all__ = ["full_softmax_xe", "sampled_softmax_xe_logq", "impression_pairwise"]
