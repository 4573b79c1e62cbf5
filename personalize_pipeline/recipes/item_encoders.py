"""How the GRU family turns an item code into its vector, as one strategy.

The vector of an item is the input of the GRU and, tied, the output vector it is scored
with. :class:`ItemEncoder` covers every variant of the family with one rule — the item's
free embedding, times a per-item 0/1 ``keep``, plus a linear projection of the item's
metadata when the network has one — and three settings:

- **free embedding** (aws-hrnn, aws-personalized-ranking): ``keep`` None, no metadata;
- **metadata projection** (aws-hrnn-metadata): the network's ``item_proj`` of ``item_meta``;
- **item tower** (aws-user-personalization): ``keep`` = items with interactions, so an item
  without any is scored from its metadata alone instead of from an untrained embedding, and
  after training it gets a low bias (the 10% quantile of the trained items': a new item has
  to earn its place through its metadata or through exploration);
- **cold-start mapping** (aws-hrnn-coldstart): ``keep`` = warm items, and during training a
  random ``keep_dropout`` share of the warm embeddings is dropped for each mini-batch, so
  that the metadata mapping learns to carry the signal on its own (cold items are then
  scored from it).

The parameters (``embedding``, ``item_proj``) stay in the network, whose saved state does
not change; the encoder holds the policy and is rebuilt from the recipe's fitted state.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .hrnn import GRUNet


class ItemEncoder:
    def __init__(
        self,
        keep: np.ndarray | None = None,
        keep_dropout: float = 0.0,
        floor_unkept_bias: bool = False,
        seed: int = 0,
    ):
        self.keep = None if keep is None else np.asarray(keep, dtype=bool)
        self.keep_dropout = float(keep_dropout)
        self.floor_unkept_bias = floor_unkept_bias
        self._rng = np.random.default_rng(seed)  # the per-batch dropout of kept embeddings
        self._mask = self._as_mask(self.keep)
        self._table: torch.Tensor | None = None  # item vectors, within a training mini-batch
        self._slot: torch.Tensor | None = None  # item code -> row of a table of some items

    @staticmethod
    def _as_mask(keep: np.ndarray | None) -> torch.Tensor | None:
        return None if keep is None else torch.from_numpy(keep.astype(np.float32))

    def vectors(self, net: GRUNet, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The vectors of the items ``idx`` (all items if None)."""
        if self._table is not None and idx is None and self._slot is None:
            return self._table
        if self._table is not None and idx is not None:
            rows = idx if self._slot is None else self._slot[idx]
            return torch.nn.functional.embedding(rows, self._table)
        emb = net.embedding.weight if idx is None else net.embedding(idx)
        if self._mask is not None:
            keep = self._mask.to(emb.device)  # a plain tensor: it does not follow .to()
            emb = emb * (keep if idx is None else keep[idx]).unsqueeze(-1)
        if net.item_proj is not None and isinstance(net.item_meta, torch.Tensor):
            meta = net.item_meta if idx is None else net.item_meta[idx]
            emb = emb + net.item_proj(meta)
        return emb

    def dots(self, net: GRUNet, states: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """[N, d] states and [N, M] item codes -> [N, M] products of each row's items with its
        state; within a mini-batch straight from the table (:mod:`.gathered_dots`)."""
        if self._table is not None:
            from .gathered_dots import gathered_dots  # numba's import (~120 MB) only where it runs

            rows = idx if self._slot is None else self._slot[idx]
            return gathered_dots(states, self._table, rows)
        return (self.vectors(net, idx) * states.unsqueeze(1)).sum(-1)

    def next_batch(self) -> None:
        """Before each training mini-batch: redraw the dropped share of kept embeddings."""
        if self.keep is not None and self.keep_dropout > 0:
            drop = self._rng.random(len(self.keep)) < self.keep_dropout
            self._mask = self._as_mask(self.keep & ~drop)

    @contextmanager
    def batch_table(self, net: GRUNet, codes: torch.Tensor | None) -> Iterator[None]:
        """Within one training mini-batch that looks up the item codes ``codes`` (inputs,
        targets, negatives; None = it scores the whole catalogue), each item's vector is
        computed once and the lookups index that table:

        - when the item side is more than the free embedding (``keep`` mask, metadata
          projection) and the catalogue is no larger than the lookups, the table holds every
          item (the mask and the projection then run once per item instead of once per
          lookup, forward and backward);
        - when the catalogue is larger than the lookups, the table holds the batch's distinct
          items, looked up from the embedding once: its gradient, a dense catalogue-sized
          tensor zero-filled on every backward, is then built once per step instead of once
          per lookup (three times: inputs, targets, negatives), which was 38% of a step's CPU
          with a 100k-item catalogue (bench/README)."""
        n_items = net.embedding.num_embeddings
        derived = self._mask is not None or (net.item_proj is not None and isinstance(net.item_meta, torch.Tensor))
        self._table, self._slot = None, None
        if derived and (codes is None or n_items <= len(codes)):
            self._table = self.vectors(net)
        elif codes is not None and len(codes) < n_items:
            distinct = torch.unique(codes)
            self._table = self.vectors(net, distinct)
            # -1 for the items not in the table: a lookup outside ``codes`` fails loudly
            self._slot = torch.full((n_items,), -1, dtype=torch.long, device=codes.device)
            self._slot[distinct] = torch.arange(len(distinct), device=codes.device)
        try:
            yield
        finally:
            self._table, self._slot = None, None

    @torch.no_grad()
    def end_training(self, net: GRUNet) -> None:
        """After training: every kept embedding back, and (item tower) a low bias for the
        items without one."""
        self._mask = self._as_mask(self.keep)
        if self.floor_unkept_bias and self.keep is not None and self.keep.any() and (~self.keep).any():
            low = float(np.quantile(net.bias.numpy()[self.keep], 0.1))
            net.bias[torch.from_numpy(~self.keep)] = low


__all__ = ["ItemEncoder"]
