"""aws-hrnn-metadata: aws-hrnn plus item, user and contextual metadata as model inputs.

- Item metadata (categorical ``|`` multi-values as mean-pooled one-hots, numeric fields as
  z-scores) is projected into the item space and added to the item embedding, on the input
  and (tied) on the output side, so similar items share evidence.
- User metadata initialises the GRU state (tanh of a projection), so users with little
  history are still told apart by who they are.
- Contextual interaction metadata (e.g. CABIN_TYPE, DEVICE) gets one embedding per field,
  added to each history event's input; the solution version stores each event's context.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from ..errors import InputError
from ..features import Features
from .hrnn import HRNN, GRUNet

MAX_VOCAB = 512  # per categorical field; larger vocabularies are hashed into this many slots


def metadata_matrix(frame: pd.DataFrame) -> np.ndarray:
    """Dense float32 [rows, F] from the ``cat_*`` (code lists) and ``num_*`` columns of a
    featurized items/users frame; vectorised over rows."""
    n = len(frame)
    blocks: list[np.ndarray] = []
    for col in frame.columns:
        if col.startswith("num_"):
            blocks.append(frame[col].to_numpy(np.float32).reshape(n, 1))
        elif col.startswith("cat_"):
            arr = pa.array(frame[col])
            if isinstance(arr, pa.ChunkedArray):
                arr = arr.combine_chunks()
            codes = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.int64)
            rows = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False).astype(np.int64)
            width = int(min(codes.max(initial=0) + 1, MAX_VOCAB))
            codes = np.where(codes < width, codes, codes % width)
            block = np.zeros((n, width), dtype=np.float32)
            np.add.at(block, (rows, codes), 1.0)
            block[:, 0] = 0.0  # code 0 = missing
            counts = block.sum(axis=1, keepdims=True)
            blocks.append(block / np.maximum(counts, 1.0))
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0), dtype=np.float32)


class MetaGRUNet(GRUNet):
    def __init__(self, n_items, dim, dropout_embed, dropout_hidden, item_meta, user_meta, ctx_sizes):
        super().__init__(n_items, dim, dropout_embed, dropout_hidden)
        self.register_buffer("item_meta", torch.from_numpy(item_meta), persistent=False)
        self.register_buffer("user_meta", torch.from_numpy(user_meta), persistent=False)
        self.item_proj = nn.Linear(item_meta.shape[1], dim, bias=False) if item_meta.shape[1] else None
        self.user_proj = nn.Linear(user_meta.shape[1], dim) if user_meta.shape[1] else None
        self.ctx = nn.ModuleList(nn.Embedding(int(v) + 1, dim) for v in ctx_sizes)
        for emb in self.ctx:
            nn.init.normal_(emb.weight, std=0.01)
        if self.item_proj is not None:
            nn.init.normal_(self.item_proj.weight, std=0.01)
        self.embed_keep: torch.Tensor | None = None  # per-item 0/1 multiplier (coldstart)

    def item_vectors(self, idx=None):
        emb = self.embedding.weight if idx is None else self.embedding(idx)
        if self.embed_keep is not None:
            keep = self.embed_keep if idx is None else self.embed_keep[idx]
            emb = emb * keep.unsqueeze(-1)
        if self.item_proj is not None:
            meta = self.item_meta if idx is None else self.item_meta[idx]
            emb = emb + self.item_proj(meta)
        return emb

    def input_vectors(self, items, context):
        x = self.item_vectors(items)
        if context is not None and len(self.ctx):
            for c, emb in enumerate(self.ctx):
                x = x + emb(context[..., c].clamp(0, emb.num_embeddings - 1))
        return x

    def initial_state(self, users):
        if self.user_proj is None or users is None:
            return None
        known = (users >= 0).float().unsqueeze(-1)
        h = torch.tanh(self.user_proj(self.user_meta[users.clamp(min=0)])) * known
        return h.unsqueeze(0).contiguous()


class HRNNMetadata(HRNN):
    name = "aws-hrnn-metadata"
    datasets = ("interactions", "items", "users")
    description = "HRNN with item, user and contextual metadata as inputs."

    def _prepare(self, features: Features) -> None:
        self.item_meta = metadata_matrix(features.items)
        self.user_meta = metadata_matrix(features.users)
        vocab = features.info.get("vocabularies", {})
        ctx_cols = [c for c in features.info.get("context_columns", []) if features.interactions[c].dtype.kind in "iu"]
        self.ctx_sizes = np.array([len(vocab.get("interactions." + c[4:], [])) for c in ctx_cols], dtype=np.int64)
        if not self.item_meta.shape[1] and not self.user_meta.shape[1] and not len(self.ctx_sizes):
            raise InputError(
                f"{self.name} needs metadata: an Items or Users dataset with metadata columns, or contextual columns in Interactions"
            )

    def _build(self, n_items: int) -> GRUNet:
        p = self.params
        return MetaGRUNet(n_items, p["hidden_dimension"], p["dropout_embed"], p["dropout_hidden"], self.item_meta, self.user_meta, self.ctx_sizes)

    def _restore(self, state):
        self.item_meta = np.asarray(state["item_meta"], dtype=np.float32)
        self.user_meta = np.asarray(state["user_meta"], dtype=np.float32)
        self.ctx_sizes = np.asarray(state["ctx_sizes"], dtype=np.int64)

    def state(self):
        out = super().state()
        out.update(item_meta=self.item_meta, user_meta=self.user_meta, ctx_sizes=self.ctx_sizes)
        return out

    def training_stats(self):
        stats = super().training_stats()
        stats.update(item_metadata_features=int(self.item_meta.shape[1]), user_metadata_features=int(self.user_meta.shape[1]), context_fields=len(self.ctx_sizes))
        return stats
