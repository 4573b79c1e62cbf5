"""The SASRec-family network of the v2 recipes and the training windows it reads.

:class:`SASRecNet` (Kang & McAuley, "Self-attentive sequential recommendation", ICDM 2018):
item embeddings plus learned position embeddings, a stack of causal self-attention blocks,
and the same item embeddings as the output layer ("shared item embeddings": a user's
state scores item ``i`` by a dot product with ``i``'s input vector). Choices, and where
they come from:

- **Positions counted from the end** of the window (the newest event always has the last
  position embedding): SASRec pads on the left, which gives the same alignment, so the
  state used for recommending is always read at the same position it was trained at.
- **Initialisation truncated N(0, 0.02)** (cut at two standard deviations) for the
  embeddings and every linear layer (as BERT, GPT-2 and SASRec+). PyTorch's default N(0, 1) embedding scaled by
  √d trained about 3x worse on amazon-beauty in this project's feasibility check: the
  initial logits are then huge and the softmax saturates.
- **Input item vectors scaled by √d** (SASRec; ``scale_items``): with the N(0, 0.02)
  initialisation the item identity then dominates the residual stream at the start
  instead of being as small as the position embeddings and the blocks' initial outputs
  (2.3x the validation NDCG@10 after 3 epochs on amazon-beauty). The output side uses the
  unscaled vectors.
- **Pre-layer-norm blocks** (LayerNorm before attention and before the feed-forward part,
  a final LayerNorm; SASRec normalises the query the same way), GELU feed-forward of
  width 4d, dropout on embeddings, attention and residual branches.
- **Padding costs nothing**: a position attends to itself and to earlier non-padded
  positions only, so a short history gives the same state whatever the padded length of
  its mini-batch. The position-wise parts (layer norms, the attention's projections, the
  feed-forward part) run on the real positions only, packed into one [N, d] tensor
  (:class:`PackedLayout`); only the attention itself sees the padded [B, T, T] layout. A
  mini-batch of random windows is as long as its longest one, and on sparse data most are
  short: on amazon-beauty 18% of the positions of a batch of 64 windows of 50 are real.
- **Dropout masks from raw random bits** (:class:`~.dropout.UniformMaskDropout`, as the
  GRU recipes), also on the attention weights (the attention then runs as its three
  operations instead of one fused call): ``torch.bernoulli_`` drew the masks in 15% of a
  training step on amazon-beauty.
- **Item metadata** (when the Items dataset has it): a linear projection of the item's
  metadata vector is added to its free embedding, on the input and (shared) output side,
  so items with few events borrow evidence from similar ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .dropout import UniformMaskDropout

INIT_STD = 0.02


@dataclass(frozen=True)
class PackedLayout:
    """Where the real positions of a [B, T] left-padded batch sit: ``index`` [N] their flat
    positions in ``B * T`` (row by row, oldest first), ``allowed`` the [B, 1, T, T]
    attention mask (True = may attend: earlier or same real positions, and a padded
    position itself, so that no row of the softmax is empty)."""

    batch: int
    length: int
    index: torch.Tensor
    allowed: torch.Tensor

    @classmethod
    def of(cls, real: torch.Tensor) -> PackedLayout:
        b, t = real.shape
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        allowed = (causal[None] & real[:, None, :]) | torch.eye(t, dtype=torch.bool)[None]
        return cls(b, t, real.reshape(-1).nonzero().squeeze(1), allowed.unsqueeze(1))

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        """[N, w] -> [B, T, w], zeros at the padded positions."""
        out = packed.new_zeros(self.batch * self.length, packed.shape[1])
        return out.index_copy(0, self.index, packed).view(self.batch, self.length, -1)

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """[B, T, w] -> [N, w], the real positions."""
        return padded.reshape(self.batch * self.length, -1).index_select(0, self.index)


class CausalSelfAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.ln_attention = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.project = nn.Linear(dim, dim)
        self.ln_feed_forward = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop = UniformMaskDropout(dropout)

    def forward(self, x: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
        """[N, d] packed real positions of the batch ``layout`` describes -> [N, d]."""
        d = x.shape[1]
        qkv = layout.pad(self.qkv(self.ln_attention(x)))
        q, k, v = qkv.view(layout.batch, layout.length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attended = self._attention(q, k, v, layout.allowed)
        x = x + self.drop(self.project(layout.pack(attended.transpose(1, 2))))
        return x + self.drop(self.feed_forward(self.ln_feed_forward(x)))

    def _attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Scaled dot-product attention, [B, H, T, d / H]; in training the attention weights
        get the dropout (as ``F.scaled_dot_product_attention``'s ``dropout_p``, with
        :class:`UniformMaskDropout`'s mask)."""
        if not self.training or self.drop.p == 0.0:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        scores = (q @ k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5).masked_fill_(~allowed, float("-inf"))
        return self.drop(torch.softmax(scores, dim=-1)) @ v


class SASRecNet(nn.Module):
    """Item codes ``0..n_items-1``; code ``n_items`` is padding."""

    item_meta: torch.Tensor  # a buffer (register_buffer)

    def __init__(
        self,
        n_items: int,
        dim: int,
        blocks: int,
        heads: int,
        max_length: int,
        dropout: float,
        item_meta: np.ndarray | None = None,
        scale_items: bool = False,
    ):
        super().__init__()
        self.n_items = n_items
        self.input_scale = float(np.sqrt(dim)) if scale_items else 1.0
        self.embedding = nn.Embedding(n_items + 1, dim)
        self.position = nn.Embedding(max_length, dim)
        self.blocks = nn.ModuleList(CausalSelfAttentionBlock(dim, heads, dropout) for _ in range(blocks))
        self.ln_out = nn.LayerNorm(dim)
        self.drop = UniformMaskDropout(dropout)
        meta = (
            np.zeros((n_items + 1, 0), dtype=np.float32)
            if item_meta is None
            else np.vstack([item_meta, np.zeros((1, item_meta.shape[1]))])
        )
        self.register_buffer("item_meta", torch.from_numpy(meta.astype(np.float32)), persistent=False)
        self.item_proj = nn.Linear(meta.shape[1], dim, bias=False) if meta.shape[1] else None
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(module.weight, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.embedding.weight[n_items].zero_()

    def item_vectors(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Input (and shared output) vectors of the items ``idx``; all real items if None."""
        if idx is None:
            emb, meta = self.embedding.weight[: self.n_items], self.item_meta[: self.n_items]
        else:
            emb, meta = self.embedding(idx), self.item_meta[idx]
        return emb + self.item_proj(meta) if self.item_proj is not None else emb

    def forward(self, items: torch.Tensor) -> tuple[torch.Tensor, PackedLayout]:
        """[B, T] left-padded item codes (T ≤ max_length) -> the [N, d] states at the N real
        positions (row by row, oldest first) and their layout."""
        t = items.shape[1]
        layout = PackedLayout.of(items < self.n_items)
        codes = items.reshape(-1).index_select(0, layout.index)
        x = self.item_vectors(codes) * self.input_scale + self.position.weight[-t:][layout.index % t]
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, layout)
        return self.ln_out(x), layout

    def last_state(self, items: torch.Tensor) -> torch.Tensor:
        """[B, T] left-padded windows (newest item last, each with at least one item) ->
        [B, d] state after the newest."""
        states, layout = self.forward(items)
        return layout.pad(states)[:, -1]

    def last_states(self, window: np.ndarray, block: int = 256) -> torch.Tensor:
        """[n, T] left-padded windows -> [n, d] float32 states after the newest item, run in
        blocks of similar history length, each trimmed to its longest window (most
        histories are far shorter than the window)."""
        lengths = (window < self.n_items).sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        states = torch.zeros((len(window), self.embedding.weight.shape[1]))
        for lo in range(0, len(order), block):
            rows = order[lo : lo + block]
            width = max(int(lengths[rows].max()), 1)
            states[torch.from_numpy(rows)] = self.last_state(torch.from_numpy(window[rows][:, -width:])).float()
        return states


def end_aligned_windows(
    indptr: np.ndarray, items: np.ndarray, length: int, pad: int, stride: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every user's transitions (item -> next item) cut into windows of ``length`` steps,
    the newest window ending at the user's last event and each earlier one ending
    ``stride`` steps (default ``length``) before the next; vectorised. With a ``stride``
    shorter than ``length`` the windows overlap and each target is kept only in the newest
    ``stride`` positions of its window (all of them in a user's oldest window), so every
    target is trained once and sees at least ``length - stride`` earlier events where the
    history has them. Returns inputs [W, length] (left-padded with ``pad``), targets
    [W, length] (-1 = padding or a target owned by a newer window) and the targets'
    positions in ``items`` (-1)."""
    stride = length if stride is None else int(np.clip(stride, 1, length))
    lengths = np.diff(indptr)
    n_trans = np.maximum(lengths - 1, 0)
    n_windows = np.where(n_trans > 0, 1 + (np.maximum(n_trans - length, 0) + stride - 1) // stride, 0)
    user = np.repeat(np.arange(len(lengths)), n_windows)
    k = np.arange(int(n_windows.sum())) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    last = indptr[1:][user] - 1 - k * stride  # position of the window's last target
    pos = last[:, None] - (length - 1) + np.arange(length)[None, :]
    inside = pos >= (indptr[:-1][user] + 1)[:, None]
    oldest = k == n_windows[user] - 1
    owned = oldest[:, None] | (np.arange(length)[None, :] >= length - stride)
    valid = inside & owned
    safe = np.where(inside, pos, 1)
    targets = np.where(valid, items[safe], -1).astype(np.int64)
    inputs = np.where(inside, items[safe - 1], pad).astype(np.int64)
    return inputs, targets, np.where(valid, pos, -1)


def last_items(
    history_indptr: np.ndarray, history_items: np.ndarray, length: int, pad: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rows with history, [n, T] their last ``length`` items, left-padded with ``pad``)."""
    lengths = np.minimum(np.diff(history_indptr), length)
    rows = np.flatnonzero(lengths > 0)
    width = int(lengths.max(initial=1))
    ends = history_indptr[1:][rows]
    pos = ends[:, None] - width + np.arange(width)[None, :]
    valid = np.arange(width)[None, :] >= (width - lengths[rows])[:, None]
    window = (
        np.where(valid, history_items[np.where(valid, pos, 0)], pad)
        if len(rows)
        else np.zeros((0, width), dtype=np.int64)
    )
    return rows, window.astype(np.int64)


__all__ = ["SASRecNet", "CausalSelfAttentionBlock", "PackedLayout", "end_aligned_windows", "last_items"]
