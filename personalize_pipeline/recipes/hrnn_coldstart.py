"""aws-hrnn-coldstart: HRNN-Metadata that recommends among *cold* items.

Cold items are those with at most ``cold_start_max_interactions`` interactions that were
created within ``cold_start_max_duration`` days of the reference time (the newest item's
CREATION_TIMESTAMP for ``latestItem``, now for ``currentTime``); as in Personalize there must
be between 100 and 80,000 of them. A cold item's vector comes from its metadata alone,
through the learned metadata → embedding mapping; during training the free embedding of
warm items is dropped at random (``cold_embedding_dropout``) so that the mapping learns to
carry the signal on its own. Items without any interaction therefore get meaningful scores.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..features import Features
from .base import HyperParameter as HP
from .hrnn_metadata import HRNNMetadata

MIN_COLD, MAX_COLD = 100, 80_000


class HRNNColdstart(HRNNMetadata):
    name = "aws-hrnn-coldstart"
    description = "HRNN-Metadata restricted to cold (new, rarely seen) items, scored from metadata."
    hyperparameters = HRNNMetadata.hyperparameters + (
        HP("cold_start_max_interactions", int, 15, 0, 1_000_000, help="at most this many interactions"),
        HP(
            "cold_start_max_duration",
            float,
            5.0,
            0.0,
            36500.0,
            help="created at most this many days before the reference time",
        ),
        HP("cold_start_relative_from", str, "latestItem", choices=("latestItem", "currentTime")),
        HP("cold_embedding_dropout", float, 0.5, 0.0, 1.0, help="share of warm item embeddings dropped per mini-batch"),
    )

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.cold = np.zeros(0, dtype=bool)  # saved by ``state``
        self._rng = np.random.default_rng(0)  # the per-batch embedding dropout (reset by ``_prepare``)

    def _prepare(self, features: Features, keep_layouts: bool) -> None:
        super()._prepare(features, keep_layouts)
        if not self.item_meta.shape[1]:
            raise InputError(f"{self.name} needs an Items dataset with metadata columns")
        p = self.params
        cold = self.popularity <= p["cold_start_max_interactions"]
        if "creation_timestamp" in features.items.columns:
            created = features.items["creation_timestamp"].to_numpy(np.float64)
            ref = time.time() if p["cold_start_relative_from"] == "currentTime" else np.nanmax(created)
            cold &= np.nan_to_num(created, nan=-np.inf) >= ref - p["cold_start_max_duration"] * 86400.0
        n_cold = int(cold.sum())
        if not MIN_COLD <= n_cold <= MAX_COLD:
            raise InputError(
                f"{self.name}: found {n_cold} cold items (at most {p['cold_start_max_interactions']} interactions, created within "
                f"{p['cold_start_max_duration']} days of {p['cold_start_relative_from']}); Amazon Personalize needs between "
                f"{MIN_COLD} and {MAX_COLD}"
            )
        self.cold = cold
        self._rng = np.random.default_rng(0)

    def _build(self, n_items: int):
        net = super()._build(n_items)
        net.embed_keep = torch.from_numpy((~self.cold).astype(np.float32))
        return net

    def _batch_extras(self, idx) -> None:
        drop = self._rng.random(len(self.cold)) < self.params["cold_embedding_dropout"]
        self.net.embed_keep = torch.from_numpy((~self.cold & ~drop).astype(np.float32))

    def _finish_fit(self) -> None:
        self.net.embed_keep = torch.from_numpy((~self.cold).astype(np.float32))

    def recommendable(self) -> np.ndarray:
        return self.cold

    def _restore(self, state):
        super()._restore(state)
        self.cold = np.asarray(state["cold"], dtype=bool)

    def state(self):
        out = super().state()
        out["cold"] = self.cold
        return out

    def training_stats(self):
        stats = super().training_stats()
        stats["cold_items"] = int(self.cold.sum())
        return stats
