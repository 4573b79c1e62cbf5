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
- **Padding**: padded positions contribute nothing (a position attends to itself and to
  earlier non-padded positions only), so a short history gives the same state whatever
  the padded length of its mini-batch.
- **Item metadata** (when the Items dataset has it): a linear projection of the item's
  metadata vector is added to its free embedding, on the input and (shared) output side,
  so items with few events borrow evidence from similar ones.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INIT_STD = 0.02


class CausalSelfAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.ln_attention = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.project = nn.Linear(dim, dim)
        self.ln_feed_forward = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """[B, T, d] inputs, [B, 1, T, T] bool attention mask (True = may attend)."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln_attention(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.project(attended.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.feed_forward(self.ln_feed_forward(x)))


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
        self.drop = nn.Dropout(dropout)
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

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """[B, T] left-padded item codes (T ≤ max_length) -> [B, T, d] states."""
        b, t = items.shape
        real = items < self.n_items
        x = self.item_vectors(items) * self.input_scale + self.position.weight[-t:]
        x = self.drop(x) * real.unsqueeze(-1)
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        allowed = (causal[None] & real[:, None, :]) | torch.eye(t, dtype=torch.bool)[None]
        allowed = allowed.unsqueeze(1)
        for block in self.blocks:
            x = block(x, allowed)
        return self.ln_out(x)

    def last_state(self, items: torch.Tensor) -> torch.Tensor:
        """[B, T] left-padded windows (newest item last) -> [B, d] state after the newest."""
        return self.forward(items)[:, -1]

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


__all__ = ["SASRecNet", "CausalSelfAttentionBlock", "end_aligned_windows", "last_items"]
