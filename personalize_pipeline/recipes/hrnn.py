"""aws-hrnn: a GRU next-item model over each user's time-ordered history (GRU4Rec-style).

The choices that make GRU4Rec accurate (Hidasi & Czapp 2023 show re-implementations that
drop them lose most of the accuracy) are made explicitly here:

- **Data**: every user's history is cut into windows of ``bptt`` consecutive transitions
  (input item → next item); the GRU runs over a window from a zero state, so the truncated
  back-propagation window is exactly ``bptt`` and inference uses the last ``bptt`` items.
- **Loss**: sampled softmax cross-entropy. Each mini-batch shares ``n_sample`` negatives
  drawn from item popularity ** ``sample_alpha``; logits of every candidate are corrected
  by ``log Q`` (the expected number of times it is drawn), which makes the sampled loss a
  stand-in for the full softmax. Accidental hits (a negative that is the positive) are
  rare and left in, as in GRU4Rec. Where the sample would be at least as large as the
  trained catalogue (small catalogues: ML-100k's 1,682 movies, airline's 350 items) the
  exact full softmax over the trained items is used instead: it costs no more and has no
  sampling noise (ML-100k, every rating an event: NDCG@10 0.0596 sampled, 0.0761 full;
  bench/README.md, session 9).
- **Embeddings**: the input and output item embeddings are the same matrix ("constrained
  embedding", GRU4Rec's best setting), plus an output bias per item.
- **Regularisation**: dropout on the input embedding and on the GRU output.
- **Optimiser**: Adam, its learning rate annealed along a cosine to ``learning_rate_floor`` of
  itself over the planned epochs (at a constant 0.02, aws-hrnn on 10M events diverged in its
  fifth epoch; bench/README); initialisation: embeddings uniform(±1/sqrt(d)), GRU weights
  orthogonal.
- ``recency_mask``: the loss weight of an event grows linearly with its time, from 0.5 for
  the oldest event to 1.0 for the newest, so recent behaviour counts more.

Scores are the softmax over the catalogue (they sum to 1, like Personalize's); items never
seen in training are not recommended; users without history get the most popular items.

The named units: the loop in :mod:`.training_loop`, the loss in :mod:`.losses`
(``sampled_softmax_xe_logq``, ``impression_pairwise``), the negatives in :mod:`.negatives`
(``PopularitySampler``), weight averaging in :mod:`.averaging` and the item side of the
family's variants in :mod:`.item_encoders` (``ItemEncoder``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..features import Features
from .averaging import WeightAverage
from .base import HyperParameter, Recipe, UserBatch
from .dropout import UniformMaskDropout
from .early_stopping import EarlyStopping
from .fit_state import FitState
from .gru_held_out import HeldOutWindows
from .gru_layer import gru_over_windows
from .interfaces import UserRecommender
from .item_encoders import ItemEncoder
from .losses import full_softmax_xe, impression_pairwise, sampled_softmax_xe_logq
from .negatives import PopularitySampler
from .repeats import REPEAT_HPS, RepeatMixture, mix_repeats
from .scoring import DEVICES, LinearScorer, resolve_device
from .training_loop import BatchLoss, EarlyStoppingHook, TrainingPlan, bucketed_batches, run_training

if TYPE_CHECKING:
    from .user_personalization import ExplorationConfig

HP = HyperParameter
VALIDATION_USERS_CAP = 5000  # users whose newest event early stopping holds out, at most

PERSONALIZE_HRNN_HPS = (
    HP("hidden_dimension", int, 43, 32, 256, tunable=True, help="GRU state and item embedding size"),
    HP("bptt", int, 32, 2, 32, tunable=True, help="truncated back-propagation window (events)"),
    HP("recency_mask", bool, True, tunable=True, help="weight recent events more"),
    HP("min_user_history_length_percentile", float, 0.0, 0.0, 1.0, featurization=True),
    HP("max_user_history_length_percentile", float, 0.99, 0.0, 1.0, featurization=True),
)
TRAINING_HPS = (
    HP(
        "epochs", int, 0, 0, 200, help="passes over the training windows; 0 = auto (20 for small data, fewer for large)"
    ),
    HP("learning_rate", float, 0.02, 1e-5, 0.5, tunable=True),
    HP(
        "batch_size",
        int,
        0,
        0,
        4096,
        help="windows per mini-batch; 0 = auto (about 1,400 steps in all, at least 100 per epoch, 16 to 256)",
    ),
    HP(
        "n_sample",
        int,
        0,
        0,
        65536,
        help="shared negative samples per mini-batch; 0 = auto (2048 for small data down to 512 from 1M events); "
        "the full softmax where this is at least the number of trained items",
    ),
    HP("sample_alpha", float, 0.75, 0.0, 1.0, help="negatives drawn from popularity ** alpha"),
    HP("dropout_embed", float, 0.25, 0.0, 0.9, tunable=True),
    HP("dropout_hidden", float, 0.1, 0.0, 0.9, tunable=True),
    HP(
        "dropout_reference_events",
        int,
        250_000,
        0,
        1_000_000_000,
        help="dropout_embed and dropout_hidden hold up to this many training events; above, both shrink "
        "with the square root of the ratio (more data needs less regularisation); 0 = never",
    ),
    HP(
        "weight_averaging",
        float,
        0.99,
        0.0,
        0.9999,
        help="decay of the moving average of the weights that becomes the trained model (0 = last weights)",
    ),
    HP(
        "learning_rate_floor",
        float,
        0.1,
        0.0,
        1.0,
        help="the learning rate falls along a cosine from learning_rate to this share of it over the planned "
        "epochs (1 = constant)",
    ),
    HP(
        "max_training_seconds",
        float,
        3600.0,
        1.0,
        86400.0,
        help="time budget of the training passes: the epoch that ends past it is the last",
    ),
    HP(
        "early_stopping_patience",
        int,
        0,
        0,
        50,
        help="stop after this many epochs without a better NDCG@10 on held-out newest events and keep the best "
        "weights (automatic epochs then not cut for width); 0 = train every epoch",
    ),
    HP(
        "validation_share",
        float,
        0.2,
        0.01,
        0.5,
        help="share of users whose newest event early stopping holds out (at least 1,000 users; all of them on "
        "smaller data)",
    ),
    *REPEAT_HPS,
    HP(
        "length_buckets",
        bool,
        False,
        help="mini-batches of windows of similar length, each trimmed to its longest (no GRU steps on padding)",
    ),
    HP(
        "device",
        str,
        "auto",
        choices=DEVICES,
        help="where training runs: auto (a CUDA GPU when torch sees one, else the CPU), cpu or cuda",
    ),
)


class GRUNet(nn.Module):
    def __init__(self, n_items: int, dim: int, dropout_embed: float, dropout_hidden: float):
        super().__init__()
        self.embedding = nn.Embedding(n_items, dim)
        self.bias = nn.Parameter(torch.zeros(n_items))
        self.gru = nn.GRU(dim, dim, batch_first=True)
        self.drop_embed = UniformMaskDropout(dropout_embed)
        self.drop_hidden = UniformMaskDropout(dropout_hidden)
        bound = 1.0 / math.sqrt(dim)
        nn.init.uniform_(self.embedding.weight, -bound, bound)
        for name, param in self.gru.named_parameters():
            if "weight" in name:
                for chunk in param.data.chunk(3, 0):
                    nn.init.orthogonal_(chunk)
            else:
                nn.init.zeros_(param)
        # item metadata and its projection (MetaGRUNet), read by the item encoder
        self.item_proj: nn.Linear | None = None
        self.register_buffer("item_meta", None, persistent=False)
        # how item codes become vectors (a plain attribute: the recipe sets it, not saved)
        self.encoder = ItemEncoder()

    def item_vectors(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Output (and, tied, input) vectors of the items ``idx`` (all items if None)."""
        return self.encoder.vectors(self, idx)

    def item_dots(self, states: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """[N, d] states, [N, M] item codes -> [N, M] products of the items' vectors with them."""
        return self.encoder.dots(self, states, idx)

    # MetaGRUNet overrides these two to add context and user metadata.

    def input_vectors(self, items: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        return self.item_vectors(items)

    def initial_state(self, users: torch.Tensor | None) -> torch.Tensor | None:
        return None

    def forward(
        self,
        items: torch.Tensor,
        context: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B, T] item codes (+ [B, T, C] context codes, [B] user codes) -> [B, T, dim] states.
        ``lengths`` ([B], on the CPU): the windows are left-aligned and only their first
        ``lengths`` steps are run (no GRU step on padding, whose states come back as zeros;
        on the CPU through :mod:`.gru_layer`'s hand-written backward pass, elsewhere as a
        packed sequence); the states of those steps are the same."""
        x = self.input_vectors(items, context)
        h0 = self.initial_state(users)
        if lengths is None:
            out, _ = self.gru(self.drop_embed(x), h0)
            return self.drop_hidden(out)
        lengths = lengths.clamp(min=1)  # (a window without targets runs one step; nothing reads it)
        if x.device.type == "cpu":
            return self.drop_hidden(gru_over_windows(self.gru, self.drop_embed(x), lengths, h0))
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        packed, _ = self.gru(packed._replace(data=self.drop_embed(packed.data)), h0)
        packed = packed._replace(data=self.drop_hidden(packed.data))
        return nn.utils.rnn.pad_packed_sequence(packed, batch_first=True, total_length=items.shape[1])[0]

    def final_state(
        self,
        items: torch.Tensor,
        lengths: torch.Tensor,
        context: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B, T] left-aligned padded windows and their lengths -> [B, dim] last states."""
        x = self.input_vectors(items, context)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed, self.initial_state(users))
        return h[-1]


def make_windows(indptr: np.ndarray, items: np.ndarray, bptt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut each user's transitions into windows of at most ``bptt`` steps, vectorised.

    Returns inputs [W, bptt], targets [W, bptt] (-1 = padding) and, per window, the
    position in ``items`` of its first target (to look up event times and context)."""
    lengths = np.diff(indptr)
    n_trans = np.maximum(lengths - 1, 0)
    n_windows = (n_trans + bptt - 1) // bptt
    total = int(n_windows.sum())
    user_of_window = np.repeat(np.arange(len(lengths)), n_windows)
    first_window = np.cumsum(n_windows) - n_windows
    k = np.arange(total) - np.repeat(first_window, n_windows)
    start = indptr[:-1][user_of_window] + k * bptt  # position of the window's first input
    remaining = n_trans[user_of_window] - k * bptt
    steps = np.arange(bptt)
    pos = start[:, None] + steps[None, :]
    padding = steps[None, :] >= np.minimum(remaining, bptt)[:, None]
    np.clip(pos, 0, max(len(items) - 2, 0), out=pos)  # (padding positions read any real item)
    inputs = items[pos].astype(np.int64)  # (few temporaries: at 10M events each is ~100 MB)
    inputs[padding] = 0
    targets = items[1:][pos].astype(np.int64)
    targets[padding] = -1
    return inputs, targets, start + 1


@dataclass
class GRUWindows:
    """The training windows of the GRU (see :func:`make_windows`): [W, bptt] inputs and
    targets (-1 = padding), per-event loss weights (0 on padding), each window's user and
    position (in the sorted interactions) of its first target, and [W, bptt, C] context
    codes of the inputs (None without context)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor
    users: torch.Tensor
    first_target: torch.Tensor
    context: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def n_events(self) -> int:
        return int((self.targets >= 0).sum())

    @classmethod
    def of(
        cls,
        features: Features,
        bptt: int,
        recency_mask: bool,
        context: np.ndarray | None,
        only_after: float | None = None,
    ) -> GRUWindows:
        """Every window of ``features`` (only those holding events newer than
        ``only_after`` when given). ``recency_mask``: weights grow linearly with event time,
        from 0.5 for the oldest event to 1.0 for the newest."""
        indptr, items = features.sequences()
        timestamps = features.interactions["timestamp"].to_numpy()
        inputs, targets, first_target = make_windows(indptr, items, bptt)
        steps = np.arange(bptt)[None, :]
        if only_after is not None:
            newer = (targets >= 0) & (
                timestamps[np.clip(first_target[:, None] + steps, 0, len(items) - 1)] > only_after
            )
            keep = newer.any(axis=1)
            inputs, targets, first_target = inputs[keep], targets[keep], first_target[keep]
        window_users = np.searchsorted(indptr, first_target - 1, side="right") - 1
        window_context = None
        if context is not None:
            window_context = torch.from_numpy(context[np.clip(first_target[:, None] - 1 + steps, 0, len(items) - 1)])
        weights = np.ones(targets.shape, dtype=np.float32)
        if recency_mask and len(timestamps):
            t_min, t_max = timestamps.min(), timestamps.max()
            times = timestamps[np.clip(first_target[:, None] + steps, 0, len(timestamps) - 1)]
            times -= t_min
            weights = times.astype(np.float32)
            weights *= 0.5 / max(float(t_max - t_min), 1.0)
            weights += 0.5
        weights[targets < 0] = 0.0
        return cls(
            torch.from_numpy(inputs),
            torch.from_numpy(targets),
            torch.from_numpy(weights),
            torch.from_numpy(window_users.astype(np.int64)),
            torch.from_numpy(first_target.astype(np.int64)),
            window_context,
        )


class GRURecipe(Recipe):
    """The GRU model behind aws-hrnn and its variants (training, UPDATE, scoring, state);
    :class:`HRNN` serves it as a USER_PERSONALIZATION recipe, aws-personalized-ranking as a
    PERSONALIZED_RANKING one.

    Training runs through :func:`~.training_loop.run_training`; this class supplies the
    windows, the loss of a mini-batch (:meth:`_batch_loss`) and the plan of each mode:
    :meth:`fit` (FULL), and :meth:`update`'s item-side refresh or, for a version saved
    without its latest event time, fine-tuning."""

    hyperparameters: ClassVar[tuple[HyperParameter, ...]] = PERSONALIZE_HRNN_HPS + TRAINING_HPS
    EPOCH_EVENTS: ClassVar[int] = 3_000_000  # automatic epochs: at most this many events' worth of passes
    TOTAL_STEPS: ClassVar[int] = 1_400  # automatic batch size: about this many optimizer steps in all

    def __init__(self, **params: Any):
        super().__init__(**params)
        # the fitted state (saved by ``state``): the network and what every sequence model
        # keeps besides it (:class:`~.fit_state.FitState`); subclasses add their side data
        self.net: GRUNet | None = None
        self.fit_state = FitState()
        # what training reports, and the item side of scoring built from the network
        self.users_dropped_by_history_percentiles = 0
        self._stats: dict[str, Any] = {}
        self._scorer: LinearScorer | None = None
        # benchmarks: called after every training epoch with (epoch, the WeightAverage)
        self.epoch_callback: Callable[[int, WeightAverage], None] | None = None
        self._early_stopping = EarlyStopping(0)  # of the last training (benchmarks read its scores)

    def _build(self, n_items: int) -> GRUNet:
        p = self.params
        return GRUNet(n_items, p["hidden_dimension"], p["dropout_embed"], p["dropout_hidden"])

    def _item_encoder(self) -> ItemEncoder:
        """How items become vectors (:mod:`.item_encoders`): the free embedding here."""
        return ItemEncoder()

    def _network(self, n_items: int) -> GRUNet:
        net = self._build(n_items)
        net.encoder = self._item_encoder()
        return net

    def _prepare(self, features: Features, keep_layouts: bool) -> None:
        """Hook for side information (metadata recipes); called before ``_build``.
        ``keep_layouts``: an UPDATE maps the new data onto the FULL version's layouts."""

    def _context(self, context: np.ndarray | None) -> np.ndarray | None:
        """Hook: per-event context codes as the model reads them (None = no context)."""
        return None

    def _extra_negatives(self, positions: torch.Tensor) -> torch.Tensor | None:
        """Hook: per target event (positions in the sorted interactions), extra item codes
        to use as negatives ([N, M], -1 = none), e.g. impressed but ignored items."""
        return None

    def _finish_fit(self) -> None:
        """Hook: drop what only training needed, before user states are cached."""

    # --- the three training modes -----------------------------------------------------------------
    def fit(self, features: Features, seed: int = 42) -> GRURecipe:
        """FULL: a new network trained on every window, the kept weights a moving average."""
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        everyone, features = features, self.training_set(features)  # user states: everyone's events
        self._catalogue(everyone, features)
        self._prepare(features, keep_layouts=False)
        self.net = self._network(features.n_items)
        windows = self._windows(features)
        held_out = None
        if self.params["early_stopping_patience"]:
            held_out = HeldOutWindows.take(
                windows, self.params["validation_share"], VALIDATION_USERS_CAP, rng, features.sequences()
            )
        batch, epochs = self.schedule(len(windows), windows.n_events, early_stopping=held_out is not None)
        self.fit_state.reset_repeat_choice()  # chosen again on this training's held-out events
        self._train(windows, features, rng, epochs, batch, held_out=held_out)
        del windows, held_out, features  # (at 10M events: 750 MB the user states need not share)
        self._finish(everyone, warm_items=0)
        return self

    def update(
        self,
        features: Features,
        seed: int = 42,
        previous_item_ids: np.ndarray | None = None,
        previous_user_ids: np.ndarray | None = None,
    ) -> GRURecipe:
        """UPDATE (Personalize's "not a full retraining"): keep this FULL model's network, add
        the new items and make one pass over the windows holding events newer than the
        version, moving only the item side (item biases and the embeddings of items the
        FULL model had not trained); users with new events get their state recomputed, the
        others keep theirs. A version saved without its latest event time (older format)
        is fine-tuned instead: a quarter of the FULL epochs over all windows."""
        if previous_item_ids is None or not self.fitted or self.net is None:
            return self.fit(features, seed=seed)
        if self.fit_state.latest_time is None:
            return self._fine_tune(features, seed, np.asarray(previous_item_ids, dtype=object))
        since = float(self.fit_state.latest_time)
        reuse = None
        if (
            previous_user_ids is not None
            and self.fit_state.user_state is not None
            and self.fit_state.user_history_length is not None
        ):
            reuse = (
                self.fit_state.user_state,
                self.fit_state.user_history_length,
                np.asarray(previous_user_ids, dtype=object),
                since,
            )
        rng, everyone, features, warm_items, carried = self._warm_network(
            features, seed, np.asarray(previous_item_ids, dtype=object)
        )
        windows = self._windows(features, only_after=since)
        # one pass over the new windows, in full-size batches
        self._train(windows, features, rng, 1 if len(windows) else 0, self.params["batch_size"] or 256, carried)
        self._finish(everyone, warm_items, reuse)
        return self

    def _fine_tune(self, features: Features, seed: int, previous_item_ids: np.ndarray) -> GRURecipe:
        """The whole warm-started network trains for a quarter of the FULL epochs."""
        rng, everyone, features, warm_items, _ = self._warm_network(features, seed, previous_item_ids)
        windows = self._windows(features)
        batch, epochs = self.schedule(len(windows), windows.n_events)
        self._train(windows, features, rng, max(1, epochs // 4), batch)
        self._finish(everyone, warm_items)
        return self

    # --- the steps the modes share ----------------------------------------------------------------
    def _catalogue(self, everyone: Features, features: Features) -> None:
        """Popularity and trained items (of the training set), latest event time (of all)."""
        _, items = features.sequences()
        every_time = everyone.interactions["timestamp"].to_numpy()
        self.fit_state.popularity = np.bincount(items, minlength=features.n_items).astype(np.float64)
        self.fit_state.trained = self.fit_state.popularity > 0
        self.fit_state.latest_time = float(every_time.max()) if len(every_time) else None
        self.n_items = features.n_items
        self.fit_state.measure_repeats(*features.sequences())
        self._scorer = None  # the item side of scoring is rebuilt from the new network

    def _warm_network(
        self, features: Features, seed: int, previous_item_ids: np.ndarray
    ) -> tuple[np.random.Generator, Features, Features, int, np.ndarray]:
        """The start of an UPDATE: the new catalogue, and a new network holding this one's
        weights. Returns (rng, all features, training features, items carried over, per new
        item whether its vector was trained before and stays fixed in an item-side refresh)."""
        assert self.net is not None
        old_net, old_trained = self.net, self.fit_state.trained
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        everyone, features = features, self.training_set(features)
        self._catalogue(everyone, features)
        self._prepare(features, keep_layouts=True)
        self.net = self._network(features.n_items)
        warm_items, carried = self._warm_start(old_net, previous_item_ids, features.item_ids, old_trained)
        return rng, everyone, features, warm_items, carried

    def _warm_start(
        self, old_net: GRUNet, old_item_ids: np.ndarray, new_item_ids: np.ndarray, old_trained: np.ndarray
    ) -> tuple[int, np.ndarray]:
        """Copy ``old_net`` into the new network (items keep their vectors and biases);
        returns (items carried, per new item whether it was carried and trained before)."""
        assert self.net is not None
        new_state = self.net.state_dict()
        old_state = old_net.state_dict()
        where = pd.Index(old_item_ids).get_indexer(pd.Index(new_item_ids))
        carried = where >= 0
        for name, new_value in new_state.items():
            old_value = old_state.get(name)
            if old_value is None:
                continue
            if name in ("embedding.weight", "bias"):
                new_value[torch.from_numpy(np.flatnonzero(carried))] = old_value[torch.from_numpy(where[carried])]
            elif old_value.shape == new_value.shape:
                new_value.copy_(old_value)
        self.net.load_state_dict(new_state)
        # rows whose learned vectors are kept as they are in an item-side refresh: items the
        # old model knew and had trained (an UPDATE still learns the others)
        if old_net.encoder.keep is not None:
            trained_before = old_net.encoder.keep
        elif len(old_trained) == len(old_item_ids):
            trained_before = np.asarray(old_trained, dtype=bool)
        else:
            trained_before = np.ones(len(old_item_ids), dtype=bool)
        return int(carried.sum()), carried & trained_before[np.maximum(where, 0)]

    def _windows(self, features: Features, only_after: float | None = None) -> GRUWindows:
        p = self.params
        context = self._context(features.context_matrix())
        return GRUWindows.of(features, p["bptt"], p["recency_mask"], context, only_after)

    def _train(
        self,
        windows: GRUWindows,
        features: Features,
        rng: np.random.Generator,
        epochs: int,
        batch: int,
        frozen: np.ndarray | None = None,
        held_out: HeldOutWindows | None = None,
    ) -> None:
        """Train on ``windows``: the whole network with weight averaging, or with ``frozen``
        (an item-side refresh) only the item embeddings and biases, the rows marked frozen
        kept as they are and the user states computed without gradients. With ``held_out``,
        the averaged weights are scored on it after every epoch and the best are kept."""
        assert self.net is not None
        p = self.params
        device = resolve_device(p["device"])
        net = self.net.to(device)  # back on the CPU before the states are cached and the model saved
        net.drop_embed.p, net.drop_hidden.p = self.dropout_rates(windows.n_events)
        # as many negatives as a FULL training of this data would use (not more because an
        # UPDATE's pass covers fewer events); one draw per mini-batch keeps the training rng's
        # stream (shuffles and negatives interleaved)
        transitions = int(np.maximum(np.diff(features.sequences()[0]) - 1, 0).sum())
        sampler = self._sampler(transitions, rng)
        if sampler is None:  # full softmax over the trained items: the others' logits at -inf
            log_q = torch.from_numpy(np.where(self.fit_state.trained, 0.0, np.inf).astype(np.float32)).to(device)
        else:
            log_q = sampler.log_q.to(device)
        if frozen is None:
            plan = TrainingPlan(list(net.parameters()), epochs, p["learning_rate"], average_decay=p["weight_averaging"])
        else:
            rows = torch.from_numpy(frozen).to(device)
            plan = TrainingPlan([net.embedding.weight, net.bias], epochs, p["learning_rate"])
            plan.frozen_rows = (net.embedding.weight, rows)
        plan.max_seconds, plan.lr_floor = p["max_training_seconds"], p["learning_rate_floor"]

        lengths = (windows.targets >= 0).sum(dim=1).numpy()
        trim = bool(p["length_buckets"])

        def batches() -> list[torch.Tensor]:
            if trim:
                return [torch.from_numpy(b) for b in bucketed_batches(lengths, batch, rng)]
            order = torch.from_numpy(rng.permutation(len(windows)))
            return [order[b : b + batch] for b in range(0, len(windows), batch)]

        def batch_loss(idx: torch.Tensor) -> BatchLoss:
            width = int(lengths[idx.numpy()].max()) if trim else p["bptt"]
            return self._batch_loss(windows, idx, sampler, log_q, frozen is not None, device, width)

        hook = self._early_stopping_hook(net, held_out, device)
        log = run_training(net, plan, batches, batch_loss, early_stopping=hook, after_epoch=self.epoch_callback)
        recency = {}
        if held_out is not None:
            with torch.no_grad():
                scores = self._held_out_scores(net, held_out, device)
                recency = self.fit_state.choose_recency_weight(self.params, self.repeat_revivable(), scores)
        net.to("cpu")
        self._stats = {
            **log.stats(),
            "epochs_planned": epochs,
            **self._early_stopping_report(held_out),
            **recency,
            "training_events": windows.n_events,
            "windows": len(windows),
            "batch_size": batch,
            "dropout": [net.drop_embed.p, net.drop_hidden.p],
            "loss": "full softmax" if sampler is None else f"sampled softmax, {sampler.n_sample} negatives, logQ",
            "torch_threads": torch.get_num_threads(),
        }

    def _sampler(self, transitions: int, rng: np.random.Generator) -> PopularitySampler | None:
        """The shared negatives of a mini-batch, or None for the full softmax: when the sample
        would be at least as large as the trained catalogue (small catalogues), the exact loss
        over every trained item costs no more than the sampled estimate and has no sampling
        noise (RecBole's GRU4Rec and SASRec+ train with it)."""
        n_sample, n_trained = self.negatives(transitions), int(self.fit_state.trained.sum())
        if n_sample >= n_trained:
            return None
        return PopularitySampler(self.fit_state.popularity, n_sample, self.params["sample_alpha"], rng, cache_batches=1)

    def _early_stopping_hook(
        self, net: GRUNet, held_out: HeldOutWindows | None, device: torch.device
    ) -> EarlyStoppingHook | None:
        """Scores the weights training would keep on ``held_out`` (None: no early stopping)
        as they would be served (repeat-mixed with the users' histories); items never
        trained are not ranked."""
        self._early_stopping = EarlyStopping(self.params["early_stopping_patience"])
        if held_out is None:
            return None
        scores = self._held_out_scores(net, held_out, device)
        return EarlyStoppingHook(self._early_stopping, lambda: scores([self._repeats()])[0])

    def _held_out_scores(
        self, net: GRUNet, held_out: HeldOutWindows, device: torch.device
    ) -> Callable[[list[RepeatMixture | None]], list[float]]:
        """NDCG@10 of ``held_out`` under ``net`` as it is now, mixed by each of the mixtures
        given; items never trained are not ranked."""
        blocked = torch.from_numpy(np.where(self.fit_state.trained, 0.0, -np.inf).astype(np.float32)).to(device)
        return lambda mixtures: held_out.ndcg_at_10_each(net, net.bias + blocked, mixtures)

    def _early_stopping_report(self, held_out: HeldOutWindows | None) -> dict[str, Any]:
        if held_out is None:
            return {}
        stopping = self._early_stopping
        return {
            "early_stopping_best_epoch": stopping.best_epoch,
            "held_out_users": len(held_out),
            "held_out_ndcg10_by_epoch": stopping.scores,
        }

    def _batch_loss(
        self,
        windows: GRUWindows,
        idx: torch.Tensor,
        sampler: PopularitySampler | None,
        log_q: torch.Tensor,
        item_side_only: bool,
        device: torch.device,
        width: int,
    ) -> BatchLoss:
        """The windows ``idx`` (their first ``width`` steps) -> (loss, weight) of each of their
        target events: sampled softmax with logQ over the batch's shared negatives (the full
        softmax when ``sampler`` is None; ``log_q`` then +inf for items left out), plus the
        impression term."""
        assert self.net is not None
        net = self.net
        targets = windows.targets[idx, :width]
        mask_cpu = targets >= 0
        positions = (windows.first_target[idx][:, None] + torch.arange(width)[None, :])[mask_cpu]
        x, y, w, mask = (
            t.to(device, non_blocking=True)
            for t in (windows.inputs[idx, :width], targets, windows.weights[idx, :width], mask_cpu)
        )
        net.encoder.next_batch()
        neg = sampler.draw().to(device) if sampler is not None else None
        shown = self._extra_negatives(positions)
        shown = shown.to(device) if shown is not None else None
        safe = shown.clamp(min=0) if shown is not None else None  # -1 (none) looks up item 0
        looked_up = None  # every code the batch looks up (None: it scores the whole catalogue)
        if neg is not None:
            extra = [safe.flatten()] if safe is not None else []
            looked_up = torch.cat([x.flatten(), y[mask], neg, *extra])
        with net.encoder.batch_table(net, looked_up):
            ctx = windows.context[idx, :width].to(device) if windows.context is not None else None
            with torch.set_grad_enabled(not item_side_only):
                states = net(x, ctx, windows.users[idx].to(device), mask_cpu.sum(1))[mask]  # [N, d]
            pos_items = y[mask]
            out_bias = net.bias - log_q  # logQ-corrected output bias
            pos_vectors = net.item_vectors(pos_items)
            if neg is None:
                loss_vec = full_softmax_xe(states, net.item_vectors(), pos_items, out_bias)
            else:
                loss_vec = sampled_softmax_xe_logq(
                    states, pos_vectors, net.item_vectors(neg), out_bias[pos_items], out_bias[neg]
                )
            if shown is not None and safe is not None:
                # items shown with the event but not chosen (impressions): a pairwise (BPR) term
                # asks the chosen item to score above each of them (logits without logQ)
                raw_pos = (states * pos_vectors).sum(-1) + out_bias[pos_items] + log_q[pos_items]
                shown_logit = net.item_dots(states, safe) + net.bias[safe]
                loss_vec = loss_vec + impression_pairwise(raw_pos, shown_logit, (shown >= 0).float())
            return loss_vec, w[mask]

    def _finish(self, everyone: Features, warm_items: int, reuse: tuple | None = None) -> None:
        assert self.net is not None
        self.fitted = True
        self.net.encoder.end_training(self.net)
        self._finish_fit()
        self._cache_user_states(everyone, reuse)
        self._stats.update(
            warm_started_items=warm_items,
            users_dropped_by_history_percentiles=self.users_dropped_by_history_percentiles,
        )

    @torch.no_grad()
    def _cache_user_states(self, features: Features, reuse: tuple | None = None) -> None:
        """The final GRU state of every user over the histories the solution version stores,
        so that batch inference over those users is a lookup + matrix multiply. ``reuse`` =
        (old states, old history lengths, old user ids, time): users without events after
        that time and with an unchanged history length keep their old state."""
        self.fit_state.user_state = None
        indptr, items = features.sequences()
        context = features.context_matrix()
        n_users = len(indptr) - 1
        states = np.zeros((n_users, self.params["hidden_dimension"]), dtype=np.float32)
        todo = np.arange(n_users)
        if reuse is not None:
            old_states, old_lengths, old_ids, since = reuse
            where = pd.Index(old_ids).get_indexer(pd.Index(features.user_ids))
            changed = np.zeros(n_users, dtype=bool)
            changed[features.interactions["user"].to_numpy()[features.interactions["timestamp"].to_numpy() > since]] = (
                True
            )
            changed |= old_lengths[np.maximum(where, 0)] != np.diff(indptr)  # e.g. history percentile filters moved
            keep = (where >= 0) & ~changed
            states[keep] = old_states[where[keep]]
            todo = np.flatnonzero(~keep)
        for lo in range(0, len(todo), 8192):
            codes = todo[lo : lo + 8192]
            batch = UserBatch.from_histories(codes, indptr, items, context=context)
            rows, h = self._user_vectors(batch)
            states[codes[rows]] = h.numpy()
        self.fit_state.user_state = states
        self.fit_state.user_history_length = np.diff(indptr).astype(np.int32)

    def schedule(self, n_windows: int, n_events: int, early_stopping: bool = False) -> tuple[int, int]:
        """Mini-batch size and epochs: explicit values win; ``0`` (auto) gives 20 epochs for
        small data down to 3 for a million events and more (with the dropouts scaled to the
        data, :meth:`dropout_rates`, 3 rank better than the 4 of the full dropouts did: the 1M
        demo's held-out NDCG@10 0.258 against 0.245, bench/README, session 21), which keeps
        training near-linear in size, and batches for about ``TOTAL_STEPS`` optimizer steps in
        all, at least 100 per epoch (16 to 256 windows per batch): small data takes 100 steps
        in each of its 20 epochs; large data, with fewer passes, takes more and smaller steps in
        each (aws-user-personalization on the 1M demo, held-out NDCG@10 after 2 epochs: 0.228
        with 64 windows per batch against 0.184 with 256; bench/README, session 20).
        Without early stopping, wider models (above Personalize's HRNN default of 43)
        get proportionally fewer epochs (at least 2): at the width where they were tuned they
        converge, then overfit, sooner. With ``early_stopping`` (a held-out set exists) the
        held-out score chooses the epoch, so the automatic count is a maximum, only bounding
        the cost (``EPOCH_EVENTS`` events' worth, at least 2 passes), and is not cut for width
        (sparse data with a large catalogue needs more passes, not fewer)."""
        p = self.params
        auto = float(np.clip(round(self.EPOCH_EVENTS / max(n_events, 1)), 2 if early_stopping else 3, 20))
        if not early_stopping:
            auto *= min(1.0, 43 / p["hidden_dimension"])
        epochs = p["epochs"] or int(max(2, round(auto)))
        steps_per_epoch = max(100.0, self.TOTAL_STEPS / epochs)
        batch = p["batch_size"] or int(np.clip(round(n_windows / steps_per_epoch), 16, 256))
        return batch, epochs

    def dropout_rates(self, n_events: int) -> tuple[float, float]:
        """(input, hidden) dropout of a training pass over ``n_events`` events. The dropouts
        were tuned on data of up to 200k events; above ``dropout_reference_events`` they
        shrink with the square root of the ratio, as the gap between training and held-out
        error does with the data. On large data the full rates held the models back
        (held-out NDCG@10: aws-user-personalization on the 1M demo after 2 epochs of
        64-window batches 0.228 at 0.5 / 0.3, 0.260 at 0.25 / 0.15; aws-hrnn on the 10M demo
        0.187 after 4 epochs at 0.25 / 0.1, 0.208 after 3 at the scaled 0.042 / 0.017;
        bench/README, sessions 20 and 21)."""
        p = self.params
        reference = p["dropout_reference_events"]
        scale = min(1.0, float(np.sqrt(reference / n_events))) if reference and n_events > 0 else 1.0
        return p["dropout_embed"] * scale, p["dropout_hidden"] * scale

    def negatives(self, n_events: int) -> int:
        """Shared negatives per mini-batch: an explicit ``n_sample`` wins; auto gives small
        data many (closer to the full softmax, which ranks better; GRU4Rec's tuned settings
        use 2048) and large data fewer, so the sampled-softmax work per epoch stays bounded
        (about 2.2e10 event x negative x dimension products: 2048 up to ~250k events at the
        default width, 512 from 1M; more negatives at 1M made FULL training slower for no
        gain in quality on the 1M demo: bench/README.md)."""
        return self.params["n_sample"] or int(
            np.clip(round(2.2e10 / max(n_events, 1) / self.params["hidden_dimension"]), 512, 2048)
        )

    def training_stats(self) -> dict[str, Any]:
        stats = dict(self._stats)
        stats.update(self.fit_state.repeat_stats())
        return stats

    def _repeats(self) -> RepeatMixture | None:
        """How scores are mixed with the users' histories (:mod:`.repeats`); None when off."""
        return self.fit_state.repeat_mixture(self.params, self.repeat_revivable())

    def repeat_revivable(self) -> np.ndarray | None:
        """Items a history brings back into the repeat mode where the model cannot score them
        (never trained on); None: any item (the recipe may recommend every item)."""
        return None

    # --- inference ------------------------------------------------------------------------------
    def _fitted_net(self) -> GRUNet:
        if self.net is None:
            raise RuntimeError(f"{self.name}: fit() must be called first")
        return self.net

    @torch.no_grad()
    def logits_tensor(self, batch: UserBatch) -> torch.Tensor:
        """[n, n_items] logits (torch, multi-threaded) from each user's last ``bptt``
        history items; items that may not be recommended get -inf through the bias."""
        self._check_fitted()
        n = len(batch)
        blocked = torch.from_numpy(np.where(self.recommendable(), 0.0, -np.inf).astype(np.float32))
        rows, h = self._user_vectors(batch)
        net = self._fitted_net()
        scores = torch.addmm(net.bias + blocked, h, net.item_vectors().T) if len(rows) else None
        if len(rows) == n:
            out = scores if scores is not None else torch.empty((0, self.fit_state.n_items))
        else:
            out = torch.empty((n, self.fit_state.n_items), dtype=torch.float32)
            no_history = np.ones(n, dtype=bool)
            no_history[rows] = False  # popularity order for these
            out[torch.from_numpy(no_history)] = (
                torch.from_numpy(np.log1p(self.fit_state.popularity).astype(np.float32)) + blocked
            )
            if scores is not None:
                out[torch.from_numpy(rows)] = scores
        mixture = self._repeats()
        return out if mixture is None else mix_repeats(out, *batch.seen_mask_rows_cols(), mixture)

    @torch.no_grad()
    def _user_vectors(self, batch: UserBatch) -> tuple[np.ndarray, torch.Tensor]:
        """(rows of the batch with history, their [n, dim] GRU states over the last ``bptt``
        items); cached states are looked up for a solution version's own users."""
        lengths = np.diff(batch.history_indptr)
        use = np.minimum(lengths, self.params["bptt"])
        rows = np.flatnonzero(use > 0)
        cache = self.fit_state.user_state
        users = np.asarray(batch.users, dtype=np.int64)
        if (
            batch.stored
            and cache is not None
            and len(rows)
            and users[rows].max() < len(cache)
            and users[rows].min() >= 0
        ):
            return rows, torch.from_numpy(cache[users[rows]])
        starts = batch.history_indptr[1:][rows] - use[rows]
        steps = np.arange(int(use[rows].max(initial=1)))
        valid = steps[None, :] < use[rows][:, None]
        index = np.where(valid, starts[:, None] + steps[None, :], 0)
        window = np.where(valid, batch.history_items[index], 0)
        ctx = None
        history_context = self._context(batch.history_context)
        if history_context is not None and len(history_context):
            ctx = torch.from_numpy(np.where(valid[..., None], history_context[index], 0).astype(np.int64))
        if not len(rows):
            return rows, torch.zeros((0, self.params["hidden_dimension"]))
        net = self._fitted_net()
        dev = net.embedding.weight.device  # the network's device (a GPU during training there)
        h = net.final_state(
            torch.from_numpy(window.astype(np.int64)).to(dev),
            torch.from_numpy(use[rows]),
            ctx.to(dev) if ctx is not None else None,
            torch.from_numpy(users[rows]).to(dev),
        )
        return rows, h.cpu()

    def logits(self, batch: UserBatch) -> np.ndarray:
        return self.logits_tensor(batch).numpy()

    def recommendable(self) -> np.ndarray:
        """Items the model may recommend: those it saw in training."""
        return self.fit_state.trained

    def score(self, batch: UserBatch) -> np.ndarray:
        return torch.softmax(self.logits_tensor(batch), dim=1).numpy()

    @torch.no_grad()
    def masked_logits(
        self, batch: UserBatch, exclude_seen: bool = False, allowed: np.ndarray | None = None
    ) -> torch.Tensor:
        """Logits with the user's history items (``exclude_seen``) and the items not
        ``allowed`` (filters) at -inf."""
        logits = self.logits_tensor(batch)
        if exclude_seen:
            rows, cols = batch.seen_mask_rows_cols()
            logits[torch.from_numpy(rows), torch.from_numpy(np.asarray(cols, dtype=np.int64))] = -torch.inf
        if allowed is not None:
            logits.masked_fill_(torch.from_numpy(~allowed), -torch.inf)
        return logits

    def linear_scorer(self, device: torch.device | None = None) -> LinearScorer:
        """The item side of scoring (item vectors, bias with -inf for items that may not be
        recommended, log-popularity for users without history) on ``device``, built once
        per solution version and device."""
        self._check_fitted()
        device = device or torch.device("cpu")
        cached = self._scorer
        if cached is None or cached.device != device:
            with torch.no_grad():
                blocked = torch.from_numpy(np.where(self.recommendable(), 0.0, -np.inf).astype(np.float32))
                fallback = torch.from_numpy(np.log1p(self.fit_state.popularity).astype(np.float32)) + blocked
                net = self._fitted_net()
                cached = LinearScorer.build(net.item_vectors(), net.bias + blocked, fallback, device, self._repeats())
            self._scorer = cached
        return cached

    @torch.no_grad()
    def recommend(
        self,
        batch: UserBatch,
        k: int,
        exclude_seen: bool = False,
        allowed: np.ndarray | None = None,
        *,
        device: torch.device | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by logits; scores are softmax probabilities over the (allowed) catalogue.

        Users go through in blocks (see :class:`~.scoring.LinearScorer`): user vectors (cached
        states or the GRU), one product with the item matrix, masks, top-k and the
        normaliser on the block the product left, on ``device`` (default: CPU)."""
        return self.linear_scorer(device).batch_top_k(batch, self._user_vectors, k, exclude_seen, allowed)

    # --- persistence ----------------------------------------------------------------------------
    def _restore(self, state: dict[str, np.ndarray]) -> None:
        """Hook: rebuild side information saved in the state before ``_build``."""

    def state(self) -> dict[str, np.ndarray]:
        out = {f"net.{k}": v.detach().numpy() for k, v in self._fitted_net().state_dict().items()}
        return {**out, **self.fit_state.arrays()}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.fit_state = FitState.read(state)
        self._restore(state)
        self.net = self._network(self.fit_state.n_items)
        self.net.load_state_dict(
            {k[4:]: torch.from_numpy(np.array(v)) for k, v in state.items() if k.startswith("net.")}
        )
        self.net.eval()
        self.n_items = self.fit_state.n_items


class HRNN(UserRecommender, GRURecipe):
    name = "aws-hrnn"
    description = "Hierarchical recurrent network (GRU) over each user's time-ordered history."

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
        return GRURecipe.recommend(self, batch, k, exclude_seen, allowed, device=device)
