"""aws-user-personalization: HRNN-Metadata with an item tower, impressions and exploration.

What the recipe adds to :class:`~.hrnn_metadata.HRNNMetadata` (seed ``004``):

- **Item tower**: an item's vector is its free embedding plus a projection of its
  metadata (and of its age). Items without interactions keep a zero free embedding, so
  new items are scored from their metadata alone instead of from noise, and every item
  of the catalogue can be recommended.
- **Impressions**: the items of an event's IMPRESSION list that the user did not pick
  are hard negatives in that event's loss (up to ``impression_negatives`` per event), so
  items that are shown often and ignored are demoted. RECOMMENDATION_ID stays in the
  featurized data for later analysis.
- **Exploration** (a campaign / batch-job setting, ``itemExplorationConfig``, not a
  training hyperparameter): with ``exploration_weight`` w > 0 about ``w / 2`` of each list
  goes to less-known items younger than ``exploration_item_age_cut_off`` days (relative
  to the latest interaction). They are chosen by Thompson sampling: each candidate's
  click-through rate is drawn from its Beta posterior over impressions and clicks (prior:
  the catalogue's mean click-through rate) and combined with the user's relevance, so
  items with little evidence get a chance in proportion to their uncertainty, and items
  that were shown often and ignored do not. w = 0 gives pure relevance. The draws come
  from each posterior's tabulated quantile function (:mod:`.thompson`; a quarter of the
  cost of numpy's Beta sampler, which took half of a batch job's time).
- **UPDATE** (every two hours in Personalize): no retraining. The FULL model's network is
  kept; new items join the catalogue with vectors from the item tower, the exploration
  statistics are recounted from all impressions and interactions, and one pass over the
  windows that contain events newer than the previous version refreshes the item side only
  (item biases and the free embeddings of items the FULL model had not trained; see
  :meth:`~.hrnn.HRNN.update`), so the cost follows the amount of new data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..features import Features
from .base import HyperParameter as HP
from .base import UserBatch, top_k
from .hrnn import PERSONALIZE_HRNN_HPS, TRAINING_HPS
from .hrnn_metadata import HRNNMetadata, list_column_codes
from .item_encoders import ItemEncoder
from .scoring import column_positions
from .thompson import BetaQuantiles

EXPLORATION_BLOCK = 1024  # users per exploration draw on CPU: the draws are seeded per block

DAY = 86_400.0
# the wide default model (149) needs more regularisation and smaller steps than aws-hrnn (43);
# the number of epochs is chosen on held-out newest events (bench/README.md:
# "aws-user-personalization: held-out epochs, learning rate, unknown item ages"). Mini-batches
# are random, not length-bucketed: a bucket of short windows took as large an Adam step as one
# of long windows, weighting the events of light users up to bptt times, and consecutive steps
# alternated between the two; on sparse data (amazon-beauty, 5 transitions per window) that
# cost the recipe most of its gap to aws-hrnn (bench/README.md, session 9). Its heavier dropouts
# shrink from 50k events on (aws-hrnn's from 250k): held-out NDCG@10 on ML-100k 0.108 → 0.117,
# on the 1M demo 0.242 → 0.252, movielens-poc and amazon-beauty within 1% (bench/README.md,
# session 22)
TRAINING_DEFAULTS = {
    "dropout_embed": 0.5,
    "dropout_hidden": 0.3,
    "dropout_reference_events": 50_000,
    "learning_rate": 0.01,
    "early_stopping_patience": 3,
}


@dataclass(frozen=True)
class ExplorationConfig:
    """Personalize's ``itemExplorationConfig`` (campaign / batch inference job setting)."""

    weight: float = 0.3
    item_age_cut_off: float = 30.0  # days before the latest interaction
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= float(self.weight) <= 1.0:
            raise InputError(f"explorationWeight must be between 0 and 1, got {self.weight}")
        if not float(self.item_age_cut_off) > 0.0:
            raise InputError(f"explorationItemAgeCutOff must be a positive number of days, got {self.item_age_cut_off}")

    def slots(self, k: int) -> int:
        """How many of ``k`` places go to exploration: about ``weight / 2`` of the list."""
        if self.weight <= 0 or k < 2:
            return 0
        return int(min(k - 1, max(1, round(k * self.weight / 2))))


class UserPersonalization(HRNNMetadata):
    name = "aws-user-personalization"
    datasets = ("interactions", "items", "users")
    description = "HRNN-Metadata with an item tower, impressions as negative feedback and item exploration."
    requires_metadata = False
    supports_exploration = True
    hyperparameters = (
        # Personalize's HRNN hyperparameters, with this recipe's default hidden_dimension (149)
        *(replace(hp, default=149) if hp.name == "hidden_dimension" else hp for hp in PERSONALIZE_HRNN_HPS),
        *(
            replace(hp, default=TRAINING_DEFAULTS[hp.name]) if hp.name in TRAINING_DEFAULTS else hp
            for hp in TRAINING_HPS
        ),
        HP(
            "impression_negatives",
            int,
            8,
            0,
            64,
            help="impressed-but-ignored items per event used as negatives (0: ignore impressions)",
        ),
    )
    # automatic epochs and batches: a step of this width costs about four of aws-hrnn's (43),
    # so the bounds are lower: 2M events' worth of passes (2 at 1M events) and 700 steps in all
    # (350 a pass there); with the lighter dropout of large data, 2 such passes rank better than
    # the 4 of 256-window batches before (bench/README, session 20)
    EPOCH_EVENTS = 2_000_000
    TOTAL_STEPS = 700
    # campaign settings with these names are batch inference options
    campaign_options = ("exploration_weight", "exploration_item_age_cut_off")
    # item age input: (mean, std) of log-days and the time ages are taken at, both of the FULL
    # training (None: a version saved without its latest time)

    def __init__(self, **params: Any):
        super().__init__(**params)
        # exploration statistics and the item-age input of the item tower (saved by ``state``)
        self.clicks = np.zeros(0)
        self.ignored = np.zeros(0)
        self.item_first_seen = np.zeros(0)
        self.age_reference: float | None = None  # ages as of the FULL training
        self.age_stats: tuple[float, float] | None = None
        # training only: the impressed-but-ignored items of each event
        self._ignored_impressions: IgnoredImpressions | None = None
        # exploration: the young items' Beta posteriors tabulated once ((α, β) bytes, table)
        self._beta_quantiles: tuple[bytes, BetaQuantiles] | None = None

    # --- training --------------------------------------------------------------------------------
    def _prepare(self, features: Features, keep_layouts: bool) -> None:
        super()._prepare(features, keep_layouts)
        timestamps = features.interactions["timestamp"].to_numpy().astype(np.float64)
        items = features.interactions["item"].to_numpy()
        n_items = features.n_items
        if self.fit_state.latest_time is None:  # no interactions (set by fit)
            self.fit_state.latest_time = 0.0
        clicks = np.bincount(items, minlength=n_items).astype(np.float64)
        shown = np.zeros(n_items)
        shown_and_picked = np.zeros(n_items)
        first_seen = np.full(n_items, np.inf)
        np.minimum.at(first_seen, items, timestamps)
        self._ignored_impressions = None
        if "impression" in features.interactions.columns:
            codes, parents = list_column_codes(features.interactions["impression"])
            ok = codes >= 0
            codes, parents = codes[ok], parents[ok]
            picked = codes == items[parents]
            shown = np.bincount(codes, minlength=n_items).astype(np.float64)
            shown_and_picked = np.bincount(codes[picked], minlength=n_items).astype(np.float64)
            np.minimum.at(first_seen, codes, timestamps[parents])
            if self.params["impression_negatives"] > 0 and (~picked).any():
                self._ignored_impressions = IgnoredImpressions.of(codes[~picked], parents[~picked], len(items))
        if "creation_timestamp" in features.items.columns:
            created = features.items["creation_timestamp"].to_numpy(np.float64)
            first_seen = np.where(np.isfinite(created), created, first_seen)
        # never seen and no creation time: new as of the latest interaction
        self.item_first_seen = np.where(np.isfinite(first_seen), first_seen, self.fit_state.latest_time)
        self.clicks = clicks
        self.ignored = np.maximum(shown - shown_and_picked, 0.0)
        # item age (log days) as one more item-tower input, standardised
        # ages as of the FULL training (UPDATE keeps that reference, so the vectors of the
        # items the model already knew do not move; new items count as brand new)
        warm = keep_layouts and self.age_stats is not None
        if not warm or self.age_reference is None:
            self.age_reference = self.fit_state.latest_time
        age = np.log1p(np.maximum(self.age_reference - self.item_first_seen, 0.0) / DAY)
        # an item never seen and without a creation time has an unknown age: the tower reads
        # the mean (0 after standardising), not "brand new" (an extreme the projection
        # extrapolates from: on amazon-beauty the 49 items without training interactions
        # then took 18% of the top-10 places); exploration still counts them as new
        known = np.isfinite(first_seen)
        if warm and self.age_stats is not None:
            mean, std = self.age_stats
        else:
            known_age = age[known] if known.any() else age
            mean, std = float(known_age.mean()), float(known_age.std() or 1.0)
            self.age_stats = (mean, std)
        age_input = np.where(known, (age - mean) / std, 0.0).astype(np.float32)
        self.item_meta = np.concatenate([self.item_meta, age_input[:, None]], axis=1)

    def _item_encoder(self) -> ItemEncoder:
        """The item tower: items without interactions have no free embedding (their vector is
        the metadata projection alone) and, after training, a low bias (a new item has to earn
        its place through its metadata or through exploration)."""
        return ItemEncoder(keep=self.clicks > 0, floor_unkept_bias=True)

    def _extra_negatives(self, positions: torch.Tensor) -> torch.Tensor | None:
        """Impressed-but-ignored items of the events at ``positions`` (-1 = none)."""
        if self._ignored_impressions is None:
            return None
        return self._ignored_impressions.first(positions.numpy(), self.params["impression_negatives"])

    def _finish_fit(self) -> None:
        self._ignored_impressions = None

    def recommendable(self) -> np.ndarray:
        return np.ones(self.fit_state.n_items, dtype=bool)

    # --- inference --------------------------------------------------------------------------------
    @torch.no_grad()
    def _recommend(
        self,
        batch: UserBatch,
        k: int,
        exclude_seen: bool = False,
        allowed: np.ndarray | None = None,
        *,
        exploration: ExplorationConfig | None = None,
        device: torch.device | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        if exploration is None or exploration.slots(min(k, self.fit_state.n_items)) == 0:
            return super()._recommend(batch, k, exclude_seen=exclude_seen, allowed=allowed, device=device)
        scorer = self.linear_scorer(device)
        candidates = self.exploration_candidates(exploration)
        n, k = len(batch), min(k, self.fit_state.n_items)
        items, scores = np.empty((n, k), dtype=np.int64), np.empty((n, k), dtype=np.float32)
        block = scorer.block if scorer.device.type == "cuda" else EXPLORATION_BLOCK
        for lo in range(0, n, block):  # blocks: see HRNN.recommend
            hi = min(lo + block, n)
            part = batch.rows(lo, hi) if (lo, hi) != (0, n) else batch
            rows, h = self._user_vectors(part)
            seen = part.seen_mask_rows_cols() if exclude_seen else None
            history = part.repeat_history() if scorer.repeats is not None and not exclude_seen else None
            relevant, relevant_scores, log_z, candidate_logits = scorer.top_k_and_columns(
                hi - lo, rows, h, k, candidates, allowed[lo:hi] if allowed is not None else None, seen, history
            )
            candidate_log_p = np.subtract(candidate_logits, log_z, out=candidate_logits)
            explored = self._explore(
                candidate_log_p, candidates, relevant, exploration.slots(k), exploration, part.users
            )
            items[lo:hi] = merge_lists(relevant, explored, k)
            explored_scores = (
                np.exp(
                    np.take_along_axis(
                        candidate_log_p,
                        np.maximum(np.searchsorted(candidates, explored), 0).clip(max=max(len(candidates) - 1, 0)),
                        axis=1,
                    )
                )
                if len(candidates)
                else np.zeros(explored.shape)
            )
            scores[lo:hi] = _scores_of(
                items[lo:hi],
                np.concatenate([relevant, explored], axis=1),
                np.concatenate([relevant_scores, explored_scores], axis=1),
            )
        return items, scores

    def exploration_candidates(self, exploration: ExplorationConfig) -> np.ndarray:
        """Codes of the items young enough to explore (ascending)."""
        assert self.fit_state.latest_time is not None
        age_days = (self.fit_state.latest_time - self.item_first_seen) / DAY
        return np.flatnonzero(age_days <= exploration.item_age_cut_off)

    def explore(
        self, log_p: np.ndarray, relevant: np.ndarray, n_slots: int, exploration: ExplorationConfig, batch: UserBatch
    ) -> np.ndarray:
        """[n, n_slots] exploration picks (-1 = none) given the users' [n, m] log-probabilities
        (see :meth:`_explore`)."""
        candidates = self.exploration_candidates(exploration)
        return self._explore(log_p[:, candidates], candidates, relevant, n_slots, exploration, batch.users)

    def _explore(
        self,
        candidate_log_p: np.ndarray,
        candidates: np.ndarray,
        relevant: np.ndarray,
        n_slots: int,
        exploration: ExplorationConfig,
        users: np.ndarray,
    ) -> np.ndarray:
        """Thompson sampling over each young item's click-through rate, times the user's
        relevance (``candidate_log_p``: [n, len(candidates)]), among items that are not in the
        user's relevance list and not excluded (filters, seen items: -inf)."""
        n = len(candidate_log_p)
        if not len(candidates) or n == 0:
            return np.full((n, n_slots), -1, dtype=np.int64)
        clicks, ignored = self.clicks[candidates], self.ignored[candidates]
        shown = clicks + ignored
        total_clicks, total_shown = float(self.clicks.sum()), float(self.clicks.sum() + self.ignored.sum())
        ctr = min(max(total_clicks / max(total_shown, 1.0), 0.01), 0.99)
        prior = 2.0  # pseudo-observations of the prior
        alpha = prior * ctr + clicks
        beta = prior * (1 - ctr) + ignored
        rng = np.random.default_rng([exploration.seed, n, int(np.asarray(users[:64]).sum()) & 0x7FFFFFFF])
        log_theta = self._posteriors(alpha, beta).log_draws(rng, n)
        # an item that was already tried a lot is not exploration any more
        log_novelty = -0.5 * np.log1p(shown / 10.0)
        score = log_theta  # float32 sums in place, in the same order
        score += log_novelty.astype(np.float32)[None, :]
        score += candidate_log_p
        position = column_positions(candidates, self.fit_state.n_items)
        rel_pos = np.where(relevant >= 0, position[np.maximum(relevant, 0)], -1)
        rows = np.repeat(np.arange(n), relevant.shape[1]).reshape(relevant.shape)
        score[rows[rel_pos >= 0], rel_pos[rel_pos >= 0]] = -np.inf  # already in the relevance list
        picks, values = top_k(score, n_slots)
        return np.where(picks >= 0, candidates[np.maximum(picks, 0)], -1)

    def _posteriors(self, alpha: np.ndarray, beta: np.ndarray) -> BetaQuantiles:
        """The Beta(α, β) quantile tables of the young items (:mod:`.thompson`), kept while
        the posteriors stay the same (a batch job draws from them block after block)."""
        key = alpha.tobytes() + beta.tobytes()
        if self._beta_quantiles is None or self._beta_quantiles[0] != key:
            self._beta_quantiles = (key, BetaQuantiles.of(alpha, beta))
        return self._beta_quantiles[1]

    # --- persistence ------------------------------------------------------------------------------
    def _restore(self, state):
        super()._restore(state)
        self.clicks = np.asarray(state["clicks"], dtype=np.float64)
        self.ignored = np.asarray(state["ignored"], dtype=np.float64)
        self.item_first_seen = np.asarray(state["item_first_seen"], dtype=np.float64)
        mean, std = (float(v) for v in state["age_stats"])
        self.age_stats = (mean, std)
        self.age_reference = float(state["age_reference"]) if "age_reference" in state else self.fit_state.latest_time

    def state(self):
        out = super().state()
        out.update(
            clicks=self.clicks,
            ignored=self.ignored,
            item_first_seen=self.item_first_seen,
            age_stats=np.array(self.age_stats),
            age_reference=np.array(self.age_reference),
        )
        return out

    def training_stats(self) -> dict[str, Any]:
        stats = super().training_stats()
        stats.update(
            impressions_used=bool(self.ignored.sum() > 0),
            items_shown_and_ignored=int((self.ignored > 0).sum()),
            items_without_interactions=int((self.clicks == 0).sum()),
            latest_interaction=self.fit_state.latest_time,
        )
        return stats


@dataclass(frozen=True)
class IgnoredImpressions:
    """The impressed-but-ignored items of every event, in compressed rows: the codes of
    event ``e`` are ``codes[offsets[e]:offsets[e + 1]]``, in impression order."""

    codes: np.ndarray
    offsets: np.ndarray

    @classmethod
    def of(cls, codes: np.ndarray, parents: np.ndarray, n_events: int) -> IgnoredImpressions:
        """From (code, event) pairs ordered by event (as a list column flattens)."""
        counts = np.bincount(parents, minlength=n_events)
        return cls(codes.astype(np.int64), np.concatenate([[0], np.cumsum(counts)]))

    def first(self, events: np.ndarray, width: int) -> torch.Tensor:
        """[len(events), width] item codes (-1 padding): the first ``width`` of each event."""
        start = self.offsets[events]
        steps = np.arange(width)
        valid = steps[None, :] < np.minimum(self.offsets[events + 1] - start, width)[:, None]
        out = np.where(valid, self.codes[np.where(valid, start[:, None] + steps[None, :], 0)], -1)
        return torch.from_numpy(out.astype(np.int64))


def merge_lists(relevant: np.ndarray, explored: np.ndarray, k: int) -> np.ndarray:
    """Interleave exploration picks evenly into each relevance list: ``[n, k]`` codes.

    A row with fewer exploration picks than slots keeps more relevance items, so lists stay
    full where the catalogue allows; -1 (nothing left) only pads the end."""
    n, n_slots = explored.shape
    e_valid = (explored >= 0).sum(axis=1)
    # exploration picks first (they are never in the relevance list), then relevance items
    e_keep = explored >= 0
    r_rank = np.arange(relevant.shape[1])[None, :]
    r_keep = (r_rank < (k - e_valid)[:, None]) & (relevant >= 0)
    # position keys: relevance items at their rank, exploration picks spread over the list
    r_key = r_rank.astype(np.float64) + np.zeros((n, 1))
    e_key = (np.arange(n_slots)[None, :] + 0.5) * (k / max(n_slots, 1)) - 0.25 + np.zeros((n, 1))
    keys = np.concatenate([np.where(r_keep, r_key, np.inf), np.where(e_keep, e_key, np.inf)], axis=1)
    values = np.concatenate([relevant, explored], axis=1)
    order = np.argsort(keys, axis=1, kind="stable")[:, :k]
    merged = np.take_along_axis(values, order, axis=1)
    merged[np.isinf(np.take_along_axis(keys, order, axis=1))] = -1
    return merged


def _scores_of(items: np.ndarray, codes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Score of each of ``items`` ([n, k], -1 = none: 0) looked up among the row's ``codes``
    with their ``values`` (codes are unique within a row)."""
    match = (items[:, :, None] == codes[:, None, :]) & (items[:, :, None] >= 0)
    found = np.take_along_axis(values, match.argmax(axis=2), axis=1)
    return np.where(match.any(axis=2), found, 0.0).astype(np.float32)
