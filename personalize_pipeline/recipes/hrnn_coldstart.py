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

from ..errors import InputError
from ..features import Features
from .base import HyperParameter as HP
from .hrnn_metadata import HRNNMetadata
from .item_encoders import ItemEncoder

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

    def _prepare(self, features: Features, keep_layouts: bool) -> None:
        super()._prepare(features, keep_layouts)
        if not self.item_meta.shape[1]:
            raise InputError(f"{self.name} needs an Items dataset with metadata columns")
        p = self.params
        cold = self.fit_state.popularity <= p["cold_start_max_interactions"]
        if "creation_timestamp" in features.items.columns:
            created = features.items["creation_timestamp"].to_numpy(np.float64)
            ref = time.time() if p["cold_start_relative_from"] == "currentTime" else np.nanmax(created)
            cold &= np.nan_to_num(created, nan=-np.inf) >= ref - p["cold_start_max_duration"] * 86400.0
        n_cold = int(cold.sum())
        if not MIN_COLD <= n_cold <= MAX_COLD:
            raise InputError(
                f"{self.name}: found {n_cold} cold items (at most {p['cold_start_max_interactions']} interactions, "
                f"created within {p['cold_start_max_duration']} days of {p['cold_start_relative_from']}); "
                f"Amazon Personalize needs between {MIN_COLD} and {MAX_COLD}"
            )
        self.cold = cold

    def _item_encoder(self) -> ItemEncoder:
        """The cold-start mapping: cold items have no free embedding (their vector is the
        metadata projection alone); warm ones lose theirs at random during training."""
        return ItemEncoder(keep=~self.cold, keep_dropout=self.params["cold_embedding_dropout"], seed=0)

    def recommendable(self) -> np.ndarray:
        return self.cold

    def repeat_revivable(self) -> np.ndarray:
        return self.cold  # a warm item is never recommended, not even as a repeat

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
