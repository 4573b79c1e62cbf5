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

import json
from typing import Any

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


class MetadataLayout:
    """Column layout of a metadata matrix: the ``cat_*`` (code lists) and ``num_*`` columns of a
    featurized items/users frame and, per categorical column, its vocabulary.

    It is fixed when a FULL solution version is trained and reused by UPDATE, so that new
    rows, new vocabulary values (which shift the featurizer's sorted codes) and missing
    columns map onto the columns the model was trained with: known values keep their
    column, unknown ones count as missing."""

    def __init__(self, columns: list[dict]):
        self.columns = columns

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        vocabularies: dict[str, list[str]] | None = None,
        dataset: str = "items",
        numeric_stats: dict | None = None,
    ) -> MetadataLayout:
        columns: list[dict] = []
        for col in frame.columns:
            if col.startswith("num_"):
                stats = (numeric_stats or {}).get(f"{dataset}.{col[4:]}")
                columns.append({"column": col, "kind": "num", "stats": stats})
            elif col.startswith("cat_"):
                vocab = (vocabularies or {}).get(f"{dataset}.{col[4:]}")
                if vocab is None:  # no vocabulary known: the codes themselves
                    width = int(list_column_codes(frame[col])[0].max(initial=0)) + 1
                else:
                    width = len(vocab) + 1
                columns.append({"column": col, "kind": "cat", "vocab": vocab, "width": int(min(width, MAX_VOCAB))})
        return cls(columns)

    @property
    def width(self) -> int:
        return sum(1 if c["kind"] == "num" else c["width"] for c in self.columns)

    def transform(
        self,
        frame: pd.DataFrame,
        vocabularies: dict[str, list[str]] | None = None,
        dataset: str = "items",
        numeric_stats: dict | None = None,
    ) -> np.ndarray:
        """Dense float32 [rows, width]: multi-hot categorical values mean-pooled, numeric
        values standardised with the statistics of the data the layout was fitted on;
        vectorised over rows."""
        n = len(frame)
        blocks: list[np.ndarray] = []
        for spec in self.columns:
            col = spec["column"]
            if spec["kind"] == "num":
                values = frame[col].to_numpy(np.float64) if col in frame.columns else np.zeros(n)
                frozen, current = spec.get("stats"), (numeric_stats or {}).get(f"{dataset}.{col[4:]}")
                if frozen and current and frozen != current:  # z-scores of this data -> the layout's scale
                    raw = values * current["std"] + current["mean"]
                    values = np.where(values == 0.0, 0.0, (raw - frozen["mean"]) / frozen["std"])
                blocks.append(values.astype(np.float32).reshape(n, 1))
                continue
            width = spec["width"]
            block = np.zeros((n, width), dtype=np.float32)
            if col in frame.columns:
                codes, rows = list_column_codes(frame[col])
                current = (vocabularies or {}).get(f"{dataset}.{col[4:]}")
                if spec["vocab"] is not None and current is not None and current != spec["vocab"]:
                    remap = np.concatenate([[0], pd.Index(spec["vocab"]).get_indexer(pd.Index(current)) + 1])
                    codes = remap[np.clip(codes, 0, len(remap) - 1)]
                codes = np.where(codes < width, codes, codes % width)
                np.add.at(block, (rows, codes), 1.0)
                block[:, 0] = 0.0  # code 0 = missing
                block /= np.maximum(block.sum(axis=1, keepdims=True), 1.0)
            blocks.append(block)
        return np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0), dtype=np.float32)

    def to_json(self) -> str:
        return json.dumps(self.columns)

    @classmethod
    def from_json(cls, text: str) -> MetadataLayout:
        return cls(json.loads(text))


def list_column_codes(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes, row of each code) of a list-of-codes column."""
    # an Arrow-backed column converts without copying (pa.array would go row by row)
    arr = series.array.__arrow_array__() if isinstance(series.dtype, pd.ArrowDtype) else pa.array(series)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    codes = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    rows = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, rows


def metadata_matrix(frame: pd.DataFrame) -> np.ndarray:
    """Dense float32 [rows, F] from the ``cat_*`` and ``num_*`` columns of a frame, with the
    layout of that frame itself."""
    return MetadataLayout.fit(frame).transform(frame)


def context_remap(frozen: list[list[str]], current: list[list[str]]) -> np.ndarray:
    """[fields, max_codes] table taking the featurizer's context codes of the current data
    (1-based, 0 = missing) to the codes the model was trained with (unknown values -> 0)."""
    width = max([len(c) + 1 for c in current] + [1])
    table = np.zeros((len(frozen), width), dtype=np.int64)
    for f, (old, new) in enumerate(zip(frozen, current, strict=True)):
        table[f, 1 : len(new) + 1] = pd.Index(old).get_indexer(pd.Index(new)) + 1
    return table


class MetaGRUNet(GRUNet):
    item_meta: torch.Tensor  # buffers (register_buffer)
    user_meta: torch.Tensor

    def __init__(
        self,
        n_items: int,
        dim: int,
        dropout_embed: float,
        dropout_hidden: float,
        item_meta: np.ndarray,
        user_meta: np.ndarray,
        ctx_sizes: np.ndarray,
    ):
        super().__init__(n_items, dim, dropout_embed, dropout_hidden)
        self.register_buffer("item_meta", torch.from_numpy(item_meta), persistent=False)
        self.register_buffer("user_meta", torch.from_numpy(user_meta), persistent=False)
        self.item_proj = nn.Linear(item_meta.shape[1], dim, bias=False) if item_meta.shape[1] else None
        self.user_proj = nn.Linear(user_meta.shape[1], dim) if user_meta.shape[1] else None
        ctx_embeddings = [nn.Embedding(int(v) + 1, dim) for v in ctx_sizes]
        for emb in ctx_embeddings:
            nn.init.normal_(emb.weight, std=0.01)
        self.ctx = nn.ModuleList(ctx_embeddings)
        if self.item_proj is not None:
            nn.init.normal_(self.item_proj.weight, std=0.01)

    def input_vectors(self, items: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        x = self.item_vectors(items)
        if context is not None and len(self.ctx):
            for c, emb in enumerate(self.ctx):
                assert isinstance(emb, nn.Embedding)  # self.ctx holds one embedding per context field
                x = x + emb(context[..., c].clamp(0, emb.num_embeddings - 1))
        return x

    def initial_state(self, users: torch.Tensor | None) -> torch.Tensor | None:
        if self.user_proj is None or users is None:
            return None
        known = (users >= 0).float().unsqueeze(-1)
        h = torch.tanh(self.user_proj(self.user_meta[users.clamp(min=0)])) * known
        return h.unsqueeze(0).contiguous()


class HRNNMetadata(HRNN):
    name = "aws-hrnn-metadata"
    datasets = ("interactions", "items", "users")
    description = "HRNN with item, user and contextual metadata as inputs."
    requires_metadata = True

    def __init__(self, **params: Any):
        super().__init__(**params)
        # fixed by FULL, kept by UPDATE (saved by ``state``)
        self.item_layout: MetadataLayout | None = None
        self.user_layout: MetadataLayout | None = None
        self.ctx_columns: list[str] = []
        self.ctx_vocab: list[list[str]] = []
        self.ctx_sizes = np.zeros(0, dtype=np.int64)
        # the current data mapped onto them
        self.item_meta = np.zeros((0, 0), dtype=np.float32)
        self.user_meta = np.zeros((0, 0), dtype=np.float32)
        self.ctx_map = np.zeros((0, 1), dtype=np.int64)

    def _prepare(self, features: Features, keep_layouts: bool) -> None:
        vocab = features.info.get("vocabularies", {})
        stats = features.info.get("numeric_stats", {})
        ctx_cols = [c for c in features.info.get("context_columns", []) if features.interactions[c].dtype.kind in "iu"]
        current_ctx = [vocab.get("interactions." + c[4:], []) for c in ctx_cols]
        if not keep_layouts or self.item_layout is None or self.user_layout is None:
            # FULL: the layouts and context vocabularies of this data are the model's
            self.item_layout = MetadataLayout.fit(features.items, vocab, "items", stats)
            self.user_layout = MetadataLayout.fit(features.users, vocab, "users", stats)
            self.ctx_columns, self.ctx_vocab = ctx_cols, current_ctx
            self.ctx_sizes = np.array([len(v) for v in current_ctx], dtype=np.int64)
        # UPDATE keeps the FULL version's layouts: new data is mapped onto them
        self.item_meta = self.item_layout.transform(features.items, vocab, "items", stats)
        self.user_meta = self.user_layout.transform(features.users, vocab, "users", stats)
        current = [current_ctx[ctx_cols.index(c)] if c in ctx_cols else [] for c in self.ctx_columns]
        self.ctx_map = context_remap(self.ctx_vocab, current)
        if (
            self.requires_metadata
            and not self.item_meta.shape[1]
            and not self.user_meta.shape[1]
            and not len(self.ctx_sizes)
        ):
            raise InputError(
                f"{self.name} needs metadata: an Items or Users dataset with metadata columns, "
                "or contextual columns in Interactions"
            )

    def _context(self, context: np.ndarray | None) -> np.ndarray | None:
        """Context codes of the current data -> the model's codes (see ``context_remap``)."""
        if context is None or not len(self.ctx_sizes) or context.shape[1] != len(self.ctx_sizes):
            return None
        cols = np.arange(context.shape[1])[None, :]
        return self.ctx_map[cols, np.clip(context, 0, self.ctx_map.shape[1] - 1)]

    def _build(self, n_items: int) -> GRUNet:
        p = self.params
        return MetaGRUNet(
            n_items,
            p["hidden_dimension"],
            p["dropout_embed"],
            p["dropout_hidden"],
            self.item_meta,
            self.user_meta,
            self.ctx_sizes,
        )

    def _restore(self, state):
        self.item_meta = np.asarray(state["item_meta"], dtype=np.float32)
        self.user_meta = np.asarray(state["user_meta"], dtype=np.float32)
        self.ctx_sizes = np.asarray(state["ctx_sizes"], dtype=np.int64)
        n_ctx = len(self.ctx_sizes)
        self.ctx_map = (
            np.asarray(state["ctx_map"], dtype=np.int64)
            if "ctx_map" in state
            else np.tile(np.arange(int(self.ctx_sizes.max(initial=0)) + 1), (n_ctx, 1))
        )
        if "layouts" in state:
            layouts = json.loads(str(state["layouts"]))
            self.item_layout = MetadataLayout(layouts["items"])
            self.user_layout = MetadataLayout(layouts["users"])
            self.ctx_columns, self.ctx_vocab = layouts["context_columns"], layouts["context_vocab"]

    def state(self):
        out = super().state()
        assert self.item_layout is not None and self.user_layout is not None
        layouts = {
            "items": self.item_layout.columns,
            "users": self.user_layout.columns,
            "context_columns": self.ctx_columns,
            "context_vocab": self.ctx_vocab,
        }
        out.update(
            item_meta=self.item_meta,
            user_meta=self.user_meta,
            ctx_sizes=self.ctx_sizes,
            ctx_map=self.ctx_map,
            layouts=np.array(json.dumps(layouts)),
        )
        return out

    def training_stats(self):
        stats = super().training_stats()
        stats.update(
            item_metadata_features=int(self.item_meta.shape[1]),
            user_metadata_features=int(self.user_meta.shape[1]),
            context_fields=len(self.ctx_sizes),
        )
        return stats
