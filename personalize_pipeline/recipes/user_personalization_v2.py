"""aws-user-personalization-v2: a SASRec-family transformer over each user's recent events.

Amazon Personalize's current recipes (User-Personalization-v2, Personalized-Ranking-v2)
are transformer-based. This one is a SASRec model (:mod:`.sasrec`) trained the way the
recent literature found it ranks best; the choices, and where each comes from:

- **Architecture** (SASRec, Kang & McAuley, ICDM 2018): learned position embeddings, causal
  self-attention blocks, and the item embeddings shared between input and output; the
  user's state after their newest event scores every item by a dot product.
- **Loss** (SASRec+, Klenitskiy & Vasilev, RecSys 2023): softmax cross-entropy over the
  whole catalogue at every position of every window, instead of SASRec's one sampled
  negative with binary cross-entropy. Their SASRec+ beats BERT4Rec and a tuned GRU4Rec on
  ML-1M (NDCG@10 0.182 vs 0.1545); the loss, not the architecture, makes the difference.
- **Large catalogues** (gSASRec, Petrov & Macdonald, RecSys 2023; GRU4Rec's logQ): the
  full softmax is kept up to ``FULL_SOFTMAX_MAX_ITEMS`` items (32,768; amazon-beauty's 12k
  items and the other Amazon/Yelp benchmarks of its kind are full-softmax sizes, and the
  full softmax is what SASRec+ measured); above, each mini-batch shares ``n_sample``
  negatives (4,096) drawn from popularity ** ``sample_alpha`` with the logits corrected by
  log Q. gSASRec shows that many negatives with a correction of the sampling's
  overconfidence recover most of the full softmax's accuracy (we use the logQ-corrected
  softmax rather than its gBCE: same aim, and the loss the HRNN family already uses).
- **Initialisation truncated N(0, 0.02), input item vectors scaled by √d, and Adam** (as
  SASRec+'s code: BERT-style initialisation, SASRec's √d): the PyTorch default N(0, 1)
  embedding scaled by √d reached a third of the accuracy in this project's feasibility
  check; without the √d the item vectors enter the blocks as small as the position
  embeddings and the blocks' initial outputs, and validation NDCG@10 after 3 epochs on
  amazon-beauty was 0.019 instead of 0.043 (bench/README). **Dropout 0.2** on the
  embeddings, attention and residual branches (SASRec: 0.2 for dense MovieLens, 0.5 for
  the sparse Amazon sets; SASRec+ 0.1): between the two, as one default serves both kinds;
  higher rates reach the same peak only after more epochs than the time budget allows.
- **Mini-batches of 128 windows drawn at random** (SASRec samples users at random; SASRec+
  uses 128 windows): every batch mixes short and long histories, so each target event
  weighs the same in the loss and consecutive steps are independent. Batching by length
  (padding-free, then about a quarter cheaper per epoch) weighed the few targets of a batch
  of short histories as much as the many of a batch of long ones; it peaked earlier and
  much lower on amazon-beauty (bench/README). The padding of random batches costs little
  since the blocks run on the real positions only (:class:`.sasrec.PackedLayout`: an
  amazon-beauty epoch 27.7 -> 15.8 s on two cores). 128 rather than 64 (the default until
  session 20, chosen with batches by length): with random batches, amazon-beauty's NDCG@10
  over seeds 42 / 1 / 2 is 0.0567 / 0.0556 / 0.0562 against 0.0545 / 0.0552 / 0.0537, with 256
  0.0537 (seed 42), with 32 0.0504 (bench/README, session 20).
- **Early stopping** (:mod:`.early_stopping`; RecBole's ``stopping_step``, SASRec+): after
  each epoch the averaged weights rank the catalogue for a sample of users whose newest
  training event was held out as a target; training stops ``early_stopping_patience``
  epochs after the best NDCG@10 and keeps the best weights. How many passes pay differs by
  an order of magnitude between dense and sparse data, and sparse data overfits past it.
  The sample is ``validation_share`` 10% of the users (at most 5,000): the held-out events
  are each user's newest, the most telling ones for the next, and training without the
  20% held out before ranked amazon-beauty's test events 3-4% better at the same epoch
  (bench/README); 10% halves that cost and still scores on thousands of users.
  The held-out ranking is scored as the recipe serves it, repeat-aware (below): scored raw,
  it kept rising on amazon-beauty after the test NDCG@10 had peaked, as the model learnt
  to rank the users' own items (never bought again there) lower, which served lists
  leave out anyway.
- **Windows**: every user's history cut into windows of ``max_sequence_length`` events
  ending at the newest one (SASRec keeps only the newest window; the earlier ones are
  extra training data for long histories); each mini-batch is trimmed to its longest window.
  The windows of a long history overlap: they end ``window_stride`` events apart (auto:
  an eighth of the window) and each target is trained once, in the newest ``window_stride``
  positions of a window (anywhere in a user's oldest one), so it is predicted from at least
  7/8 of a window of earlier events, as a served state is from a full window. Windows cut
  end to end predicted the first target of each from one event, the mean from half a
  window: on ML-100k (106 events per user) the held-out NDCG@10 rose from 0.122 to 0.137
  and the test NDCG@10 from 0.1062 to 0.1157 (means of three seeds; a stride of half the
  window gave 0.1110, a quarter 0.1134; bench/README.md). Histories within one window
  (amazon-beauty's) train as before; a long one costs the blocks ``length / stride`` times
  the positions, not more output-layer work.
- **Weight averaging** (:mod:`.averaging`) as in aws-hrnn; **bf16 mixed precision** on
  CPUs with native bf16 (AVX512-BF16 / AMX), about 3x faster matrix products; the full
  softmax's log-softmax also runs in bf16 (float32 accumulation), 2.5x faster than the
  float32 one that autocast would choose.
- **Repeat-aware scores** (RepeatNet, Ren et al., AAAI 2019; :mod:`.repeats`): the window
  shows the transformer only the newest events, so it cannot know which older items the
  user already has; the scores are mixed from a repeat mode (the user's items) and an
  explore mode (the rest) with the share of training transitions that repeated an item.
  On ML-100k (nobody rates a movie twice) the user's old movies filled the top of the list.
  **Which items come back, and how likely a repeat is, per user** (``repeat_events``;
  :mod:`.repeat_head`): RepeatNet learns its repeat / explore gate and its repeat decoder
  from the data; here a conditional logit over the user's items, fit on the training
  transitions, reads the event types and times of the history (which types an item had at
  its newest timestamp, how long before the user's newest event, how many events), which
  the averages of :mod:`.repeats` cannot: on movielens-poc a movie whose watch came without
  its click yet is clicked next, and a user whose newest pairs are complete moves on
  (NDCG@10 0.6637 -> 0.7049; bench/README.md, session 24). The transformer reads item
  sequences only, as the GRU recipes do; the head is v2's.
- **Item metadata** (when present): projected and added to the item embeddings (like
  aws-hrnn-metadata), so sparse items borrow from similar ones.

FULL trains from scratch. UPDATE is an item-side refresh (as for aws-hrnn): the network is
kept, new items join the catalogue and one pass over the windows with events newer than
the FULL version trains only the vectors of items the FULL model had not trained; users
with new events get their state recomputed, the others keep the cached one. Users' states
after their whole stored history are cached in the solution version (``user_state``), so
batch inference over them is a lookup and one matrix product.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from ..features import Features
from .averaging import WeightAverage
from .base import HyperParameter, Recipe, UserBatch
from .early_stopping import EarlyStopping, HeldOutNewest
from .fit_state import FitState
from .hrnn_metadata import MetadataLayout
from .interfaces import UserRecommender
from .losses import full_softmax_xe, sampled_softmax_xe_logq
from .negatives import PopularitySampler
from .repeats import REPEAT_HPS, RepeatMixture, mix_repeats
from .sasrec import SASRecNet, end_aligned_windows, last_items
from .scoring import LinearScorer, bf16_available
from .training_loop import BatchLoss, EarlyStoppingHook, TrainingLog, TrainingPlan, run_training

if TYPE_CHECKING:
    from .user_personalization import ExplorationConfig

HP = HyperParameter
# full softmax up to FULL_SOFTMAX_MAX_ITEMS items (SASRec+), AUTO_NEGATIVES shared negatives
# with logQ above (8x+ cheaper per event there: more passes within the time budget)
AUTO_NEGATIVES = 4096
FULL_SOFTMAX_MAX_ITEMS = 32768
AUTO_WORK = 1.5e12  # multiply-adds of an automatic training schedule (see ``auto_epochs``)
VALIDATION_USERS_CAP = 5000  # users whose newest event early stopping holds out, at most
HELD_OUT_STEPS = 1  # newest training events of a held-out user left out (2 scored worse; bench/README.md)
AUTO_STRIDE_FRACTION = 8  # automatic window stride: max_sequence_length / 8 (see "Windows")
STATE_BLOCK = 4096  # users encoded at a time when caching states
LENGTH_BLOCK = 256  # users of similar history lengths run through the network at a time

V2_HPS = (
    HP("hidden_dimension", int, 64, 16, 512, tunable=True, help="item embedding and transformer width"),
    HP("num_blocks", int, 2, 1, 6, tunable=True, help="causal self-attention blocks"),
    HP("num_heads", int, 1, 1, 8, help="attention heads (must divide hidden_dimension)"),
    HP("max_sequence_length", int, 50, 5, 200, tunable=True, help="newest events a user's state is computed from"),
    HP("dropout", float, 0.2, 0.0, 0.9, tunable=True),
    HP("learning_rate", float, 0.002, 1e-5, 0.1, tunable=True),
    HP(
        "weight_decay",
        float,
        0.0,
        0.0,
        0.5,
        tunable=True,
        help="AdamW's decoupled weight decay of the embeddings and weight matrices (0 = Adam)",
    ),
    HP("batch_size", int, 128, 8, 4096, help="windows per mini-batch"),
    HP("epochs", int, 0, 0, 500, help="passes over the training windows; 0 = auto (more for small data)"),
    HP(
        "n_sample",
        int,
        0,
        0,
        65536,
        help=f"shared negatives per mini-batch; 0 = auto: full softmax up to {FULL_SOFTMAX_MAX_ITEMS:,} items, "
        f"{AUTO_NEGATIVES} negatives above",
    ),
    HP("sample_alpha", float, 0.75, 0.0, 1.0, help="negatives drawn from popularity ** alpha"),
    HP(
        "window_stride",
        int,
        0,
        0,
        200,
        help="events between the ends of a long history's overlapping training windows; 0 = auto "
        "(max_sequence_length / 8: every target is trained once, after at least 7/8 of a window of earlier events)",
    ),
    HP(
        "weight_averaging",
        float,
        0.995,
        0.0,
        0.9999,
        help="decay of the moving average of the weights kept as the model (0 = last weights)",
    ),
    HP("scale_item_input", bool, True, help="multiply the input item vectors by √hidden_dimension (SASRec)"),
    HP("use_item_metadata", bool, True, help="add a projection of the items' metadata to their embeddings"),
    HP("mixed_precision", bool, True, help="bf16 matrix products where the CPU has native bf16"),
    HP(
        "max_training_seconds",
        float,
        3600.0,
        1.0,
        86400.0,
        help="time budget of the training passes: no epoch starts that would end after it",
    ),
    HP(
        "early_stopping_patience",
        int,
        3,
        0,
        50,
        help="stop after this many epochs without a better NDCG@10 on held-out newest events and keep the best "
        "weights; 0 = train every epoch",
    ),
    *REPEAT_HPS,
    HP(
        "repeat_events",
        bool,
        True,
        help="learn each user's repeat share and which of their items comes back from the event types and times of "
        "their history (a repeat head; see recipes/repeat_head.py)",
    ),
    HP(
        "validation_share",
        float,
        0.1,
        0.01,
        0.5,
        help="share of users whose newest event early stopping holds out (at least 1,000 users; all of them on "
        "smaller data)",
    ),
    HP("min_user_history_length_percentile", float, 0.0, 0.0, 1.0, featurization=True),
    HP("max_user_history_length_percentile", float, 1.0, 0.0, 1.0, featurization=True),
)


class SASRecRecipe(Recipe):
    """The transformer behind aws-user-personalization-v2 (training, UPDATE, scoring, state);
    :class:`UserPersonalizationV2` serves it as a USER_PERSONALIZATION recipe,
    aws-personalized-ranking-v2 as a PERSONALIZED_RANKING one."""

    datasets = ("interactions", "items")
    hyperparameters = V2_HPS

    def __init__(self, **params: Any):
        super().__init__(**params)
        if self.params["hidden_dimension"] % self.params["num_heads"]:
            from ..errors import InputError

            raise InputError(
                f"num_heads ({self.params['num_heads']}) must divide "
                f"hidden_dimension ({self.params['hidden_dimension']})"
            )
        # the fitted state (saved by ``state``): the network, what every sequence model keeps
        # besides it, and the item metadata
        self.net: SASRecNet | None = None
        self.fit_state = FitState()
        self.item_layout: MetadataLayout | None = None
        self.item_meta: np.ndarray | None = None
        self._stats: dict[str, Any] = {}
        self._early_stopping = EarlyStopping(0)  # of the last training (benchmarks read its scores)
        # benchmarks: called after every training epoch with (epoch, the WeightAverage)
        self.epoch_callback: Callable[[int, WeightAverage], None] | None = None

    # --- training --------------------------------------------------------------------------------
    def fit(self, features: Features, seed: int = 42) -> SASRecRecipe:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        signals = self._signals(features)
        self._catalogue(features, keep_layout=False, signals=signals)
        self.net = self._build(features.n_items)
        indptr, items = features.sequences()
        inputs, targets, positions = end_aligned_windows(
            indptr, items, self.params["max_sequence_length"], features.n_items, self._window_stride()
        )
        held_out = None
        if self.params["early_stopping_patience"]:
            newest = np.isin(positions[:, -1] + 1, indptr[1:])
            held_out, inputs, targets = HeldOutNewest.take(
                inputs,
                targets,
                newest,
                features.n_items,
                self.params["validation_share"],
                VALIDATION_USERS_CAP,
                rng,
                HELD_OUT_STEPS,
                sequences=(indptr, items, positions[:, -1]),
                signals=signals,
            )
            trained = (targets >= 0).any(axis=1)  # (an overlapping window may have lost its only target)
            inputs, targets = inputs[trained], targets[trained]
        epochs = self.params["epochs"] or self.auto_epochs(int((targets >= 0).sum()))
        self.fit_state.reset_repeat_choice()  # chosen again on this training's held-out events
        self._train(inputs, targets, epochs, rng, list(self.net.parameters()), held_out=held_out)
        self.fitted = True
        self._cache_user_states(features)
        return self

    def update(
        self,
        features: Features,
        seed: int = 42,
        previous_item_ids: np.ndarray | None = None,
        previous_user_ids: np.ndarray | None = None,
    ) -> SASRecRecipe:
        """Item-side refresh of a FULL model (see the module docstring); a model that was
        never fitted, or an unknown previous catalogue, is trained from scratch."""
        if not self.fitted or self.net is None or previous_item_ids is None or self.fit_state.latest_time is None:
            return self.fit(features, seed=seed)
        torch.manual_seed(seed)
        since = float(self.fit_state.latest_time)
        old_net, old_trained, old_states = (
            self.net,
            self.fit_state.trained,
            (self.fit_state.user_state, self.fit_state.user_history_length, previous_user_ids),
        )
        self._catalogue(features, keep_layout=True, signals=self._signals(features))
        self.net = self._build(features.n_items)
        carried = self._carry_weights(
            old_net, np.asarray(previous_item_ids, dtype=object), features.item_ids, old_trained
        )
        indptr, items = features.sequences()
        inputs, targets, positions = end_aligned_windows(
            indptr, items, self.params["max_sequence_length"], features.n_items
        )
        timestamps = features.interactions["timestamp"].to_numpy()
        newer = ((positions >= 0) & (timestamps[np.maximum(positions, 0)] > since)).any(axis=1)
        frozen = torch.from_numpy(np.append(carried, True))  # + the padding row
        if newer.any():
            self._train(
                inputs[newer],
                targets[newer],
                1,
                np.random.default_rng(seed),
                [self.net.embedding.weight],
                frozen_rows=frozen,
            )
        self._stats["carried_items"] = int(carried.sum())
        self._cache_user_states(features, reuse=(*old_states, since))
        return self

    def _window_stride(self) -> int:
        """Events between the ends of a long history's training windows (see the module
        docstring, "Windows"); :func:`.sasrec.end_aligned_windows` keeps it within the window."""
        return self.params["window_stride"] or max(self.params["max_sequence_length"] // AUTO_STRIDE_FRACTION, 1)

    def reads_event_signals(self) -> bool:
        return self.fit_state.repeat_head is not None

    def _signals(self, features: Features) -> np.ndarray | None:
        """The events' signals where the repeat head reads them (``repeat_events``)."""
        return features.event_signals() if self.params["repeat_events"] else None

    def _catalogue(self, features: Features, keep_layout: bool, signals: np.ndarray | None) -> None:
        """Popularity, trained items, latest event time, the repeat statistics (and head, from
        the events' ``signals``) and (optionally) item metadata."""
        items = features.interactions["item"].to_numpy()
        timestamps = features.interactions["timestamp"].to_numpy()
        self.fit_state.popularity = np.bincount(items, minlength=features.n_items).astype(np.float64)
        self.fit_state.trained = self.fit_state.popularity > 0
        self.fit_state.latest_time = float(timestamps.max()) if len(timestamps) else None
        self.n_items = features.n_items
        self.fit_state.measure_repeats(*features.sequences(), signals)
        self.item_meta = None
        if not self.params["use_item_metadata"]:
            return
        vocab, stats = features.info.get("vocabularies", {}), features.info.get("numeric_stats", {})
        if not keep_layout or self.item_layout is None:
            self.item_layout = MetadataLayout.fit(features.items, vocab, "items", stats)
        if self.item_layout.width:
            self.item_meta = self.item_layout.transform(features.items, vocab, "items", stats)

    def _build(self, n_items: int) -> SASRecNet:
        p = self.params
        return SASRecNet(
            n_items,
            p["hidden_dimension"],
            p["num_blocks"],
            p["num_heads"],
            p["max_sequence_length"],
            p["dropout"],
            self.item_meta,
            p["scale_item_input"],
        )

    def _carry_weights(
        self, old: SASRecNet, old_ids: np.ndarray, new_ids: np.ndarray, old_trained: np.ndarray
    ) -> np.ndarray:
        """Copy the FULL network into the new one (same items keep their vectors); returns,
        per new item, whether it was trained before (its vector then stays fixed)."""
        assert self.net is not None
        where = pd.Index(old_ids).get_indexer(pd.Index(new_ids))
        known = where >= 0
        new_state, old_state = self.net.state_dict(), old.state_dict()
        for name, value in new_state.items():
            if name == "embedding.weight":
                value[torch.from_numpy(np.flatnonzero(known))] = old_state[name][torch.from_numpy(where[known])]
            elif name in old_state and old_state[name].shape == value.shape:
                value.copy_(old_state[name])
        self.net.load_state_dict(new_state)
        return known & np.asarray(old_trained, dtype=bool)[np.maximum(where, 0)]

    def auto_epochs(self, n_targets: int) -> int:
        """Passes over the data when ``epochs`` is 0: as many as a fixed amount of work
        allows (``AUTO_WORK`` multiply-adds: about 12 epochs of amazon-beauty's 154k training
        events with the full softmax, where its test NDCG@10 peaks at 8-12 and then overfits),
        between 4 and 100. The work per event is the output layer (catalogue or negatives ×
        width) plus the blocks (measured as about as much as 6 width² per block)."""
        p = self.params
        outputs = self._negatives() or self.n_items
        per_event = p["hidden_dimension"] * (outputs + 6 * p["hidden_dimension"] * p["num_blocks"])
        return int(np.clip(round(AUTO_WORK / max(n_targets * per_event, 1)), 4, 100))

    def _train(
        self,
        inputs: np.ndarray,
        targets: np.ndarray,
        epochs: int,
        rng: np.random.Generator,
        trainable: list,
        frozen_rows: torch.Tensor | None = None,
        held_out: HeldOutNewest | None = None,
    ) -> None:
        """Adam over randomly drawn mini-batches (:func:`~.training_loop.run_training`); with
        ``frozen_rows`` (an UPDATE) only the item embedding moves, the network's states are
        computed without gradients, and the rows marked frozen keep their values. With
        ``held_out``, the averaged weights are scored on it after every epoch and the best
        are kept (:mod:`.early_stopping`)."""
        assert self.net is not None
        net, p = self.net, self.params
        sampler = self._sampler(rng)
        plan = TrainingPlan(
            trainable,
            epochs,
            p["learning_rate"],
            betas=(0.9, 0.98),
            average_decay=p["weight_averaging"] if frozen_rows is None else 0.0,
            frozen_rows=(net.embedding.weight, frozen_rows) if frozen_rows is not None else None,
            max_seconds=p["max_training_seconds"],
            budget="no_overrun",
            weight_decay=p["weight_decay"] if frozen_rows is None else 0.0,  # (decay would move frozen rows)
        )
        X, Y = torch.from_numpy(inputs), torch.from_numpy(targets)
        lengths = (inputs < net.n_items).sum(axis=1)  # left-padded: the real inputs are the newest
        use_bf16 = p["mixed_precision"] and bf16_available()

        def batch_loss(idx: np.ndarray) -> BatchLoss:
            width = int(lengths[idx].max())
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                loss_vec = self._batch_loss(
                    X[idx][:, -width:], Y[idx][:, -width:], sampler, encoder_frozen=frozen_rows is not None
                )
            return loss_vec, None

        self._early_stopping = EarlyStopping(p["early_stopping_patience"])
        hook = None
        if held_out is not None:
            held = held_out

            def scores(mixtures: list[RepeatMixture | None]) -> list[float]:
                return held.ndcg_at_10_each(
                    lambda w: net.last_states(w, LENGTH_BLOCK), net.item_vectors(), None, mixtures
                )

            hook = EarlyStoppingHook(self._early_stopping, lambda: scores([self._repeats()])[0])
        log = run_training(
            net,
            plan,
            lambda: shuffled_batches(len(lengths), p["batch_size"], rng),
            batch_loss,
            early_stopping=hook,
            after_epoch=self.epoch_callback,
        )
        self._stats = self._training_report(log, epochs, held_out, targets, sampler, use_bf16)
        if held_out is not None:
            with torch.no_grad():
                self._stats.update(self.fit_state.choose_recency_weight(self.params, None, scores))

    def _training_report(
        self,
        log: TrainingLog,
        epochs: int,
        held_out: HeldOutNewest | None,
        targets: np.ndarray,
        sampler: PopularitySampler | None,
        use_bf16: bool,
    ) -> dict[str, Any]:
        stopping = self._early_stopping
        return {
            **log.stats(),
            "epochs_planned": epochs,
            **(
                {
                    "early_stopping_best_epoch": stopping.best_epoch,
                    "held_out_users": len(held_out.targets),
                    "held_out_ndcg10_by_epoch": stopping.scores,
                }
                if held_out is not None
                else {}
            ),
            "training_events": int((targets >= 0).sum()),
            "windows": len(targets),
            "loss": "full softmax cross-entropy"
            if sampler is None
            else f"sampled softmax, {sampler.n_sample} negatives, logQ",
            "bf16": use_bf16,
            "torch_threads": torch.get_num_threads(),
        }

    def _negatives(self) -> int:
        """Shared negatives per mini-batch; 0 = the full softmax."""
        n_sample = self.params["n_sample"] or (AUTO_NEGATIVES if self.n_items > FULL_SOFTMAX_MAX_ITEMS else 0)
        return 0 if n_sample >= int(self.fit_state.trained.sum()) else n_sample

    def _sampler(self, rng: np.random.Generator) -> PopularitySampler | None:
        """None = full softmax (the catalogue fits); otherwise the shared-negative sampler."""
        n_sample = self._negatives()
        return (
            PopularitySampler(self.fit_state.popularity, n_sample, self.params["sample_alpha"], rng)
            if n_sample
            else None
        )

    def _batch_loss(
        self, x: torch.Tensor, y: torch.Tensor, sampler: PopularitySampler | None, encoder_frozen: bool
    ) -> torch.Tensor:
        """[B, T] inputs and targets (-1 = padding) -> the loss of every target event."""
        assert self.net is not None
        with torch.set_grad_enabled(not encoder_frozen):
            states, layout = self.net(x)
        targets = y.reshape(-1).index_select(0, layout.index)  # (targets sit at real inputs only)
        trained = targets >= 0
        states, targets = states[trained], targets[trained]
        if sampler is None:
            return full_softmax_xe(states, self.net.item_vectors(), targets)
        negatives = sampler.draw()
        log_q = sampler.log_q
        return sampled_softmax_xe_logq(
            states, self.net.item_vectors(targets), self.net.item_vectors(negatives), -log_q[targets], -log_q[negatives]
        )

    @torch.no_grad()
    def _cache_user_states(self, features: Features, reuse: tuple | None = None) -> None:
        """Each user's state after their whole stored history. ``reuse`` = (old states, old
        history lengths, old user ids, time): users without events after that time and with
        an unchanged history length keep their old state (the network did not move)."""
        indptr, items = features.sequences()
        n_users = len(indptr) - 1
        states = np.zeros((n_users, self.params["hidden_dimension"]), dtype=np.float32)
        todo = np.arange(n_users)
        old_states, old_lengths, old_ids, since = reuse if reuse is not None else (None, None, None, None)
        if old_states is not None and old_lengths is not None and old_ids is not None:
            where = pd.Index(np.asarray(old_ids, dtype=object)).get_indexer(pd.Index(features.user_ids))
            changed = np.zeros(n_users, dtype=bool)
            changed[features.interactions["user"].to_numpy()[features.interactions["timestamp"].to_numpy() > since]] = (
                True
            )
            changed |= old_lengths[np.maximum(where, 0)] != np.diff(indptr)
            keep = (where >= 0) & ~changed
            states[keep] = old_states[where[keep]]
            todo = np.flatnonzero(~keep)
        for lo in range(0, len(todo), STATE_BLOCK):
            codes = todo[lo : lo + STATE_BLOCK]
            rows, h = self._encode(UserBatch.from_histories(codes, indptr, items))
            states[codes[rows]] = h.numpy()
        self.fit_state.user_state = states
        self.fit_state.user_history_length = np.diff(indptr).astype(np.int32)

    def training_stats(self) -> dict[str, Any]:
        stats = dict(self._stats)
        stats["item_metadata_features"] = int(self.item_meta.shape[1]) if self.item_meta is not None else 0
        stats.update(self.fit_state.repeat_stats())
        return stats

    # --- inference -------------------------------------------------------------------------------
    @torch.no_grad()
    def _encode(self, batch: UserBatch) -> tuple[np.ndarray, torch.Tensor]:
        """(rows of the batch with history, their [n, d] states after the newest
        ``max_sequence_length`` items); a solution version's own users are looked up."""
        assert self.net is not None
        users = np.asarray(batch.users, dtype=np.int64)
        has = np.flatnonzero(np.diff(batch.history_indptr) > 0)
        cache = self.fit_state.user_state
        if batch.stored and cache is not None and len(has) and users[has].min() >= 0 and users[has].max() < len(cache):
            return has, torch.from_numpy(cache[users[has]])
        rows, window = last_items(
            batch.history_indptr,
            np.asarray(batch.history_items, dtype=np.int64),
            self.params["max_sequence_length"],
            self.n_items,
        )
        states = self.net.last_states(window, LENGTH_BLOCK)
        return rows, states

    @torch.no_grad()
    def logits_tensor(self, batch: UserBatch) -> torch.Tensor:
        """[n, n_items] logits; items never trained on are -inf; users without history get
        the log popularity."""
        self._check_fitted()
        assert self.net is not None
        n = len(batch)
        blocked = torch.from_numpy(np.where(self.fit_state.trained, 0.0, -np.inf).astype(np.float32))
        out = torch.from_numpy(np.log1p(self.fit_state.popularity).astype(np.float32)).repeat(n, 1) + blocked
        rows, h = self._encode(batch)
        if len(rows):
            out[torch.from_numpy(rows)] = torch.addmm(blocked, h, self.net.item_vectors().T)
        mixture = self._repeats()
        if mixture is None:
            return out
        return mix_repeats(out, *batch.seen_mask_rows_cols(), mixture, batch.history_signals)

    def _repeats(self) -> RepeatMixture | None:
        """How scores are mixed with the users' histories (:mod:`.repeats`); None when off."""
        return self.fit_state.repeat_mixture(self.params)

    def logits(self, batch: UserBatch) -> np.ndarray:
        return self.logits_tensor(batch).numpy()

    def score(self, batch: UserBatch) -> np.ndarray:
        return torch.softmax(self.logits_tensor(batch), dim=1).numpy()

    def linear_scorer(self, device: torch.device | None = None) -> LinearScorer:
        """The item side of scoring: item vectors, -inf bias for items never trained on, log
        popularity for users without history (as :meth:`logits_tensor`)."""
        self._check_fitted()
        assert self.net is not None
        blocked = torch.from_numpy(np.where(self.fit_state.trained, 0.0, -np.inf).astype(np.float32))
        fallback = torch.from_numpy(np.log1p(self.fit_state.popularity).astype(np.float32)) + blocked
        return LinearScorer.build(self.net.item_vectors(), blocked, fallback, device, self._repeats())

    def recommend(
        self, batch: UserBatch, k: int, exclude_seen: bool = False, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by logits on the CPU (see :meth:`scored_top_k`)."""
        return self.scored_top_k(batch, k, exclude_seen, allowed)

    @torch.no_grad()
    def scored_top_k(
        self,
        batch: UserBatch,
        k: int,
        exclude_seen: bool = False,
        allowed: np.ndarray | None = None,
        device: torch.device | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by logits, in blocks of users through the shared scorer (see
        :class:`~.scoring.LinearScorer`) on ``device``; scores are softmax probabilities over
        the (allowed) catalogue."""
        return self.linear_scorer(device).batch_top_k(batch, self._encode, k, exclude_seen, allowed)

    # --- persistence -----------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        assert self.net is not None
        out: dict[str, np.ndarray] = {f"net.{k}": v.detach().numpy() for k, v in self.net.state_dict().items()}
        out.update(self.fit_state.arrays())
        if self.item_layout is not None:
            out["item_layout"] = np.array(self.item_layout.to_json())
        if self.item_meta is not None:
            out["item_meta"] = self.item_meta
        return out

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.fit_state = FitState.read(state)
        self.n_items = self.fit_state.n_items
        self.item_layout = MetadataLayout.from_json(str(state["item_layout"])) if "item_layout" in state else None
        self.item_meta = np.asarray(state["item_meta"], dtype=np.float32) if "item_meta" in state else None
        self.net = self._build(self.n_items)
        self.net.load_state_dict(
            {k[4:]: torch.from_numpy(np.array(v)) for k, v in state.items() if k.startswith("net.")}
        )
        self.net.eval()


class UserPersonalizationV2(UserRecommender, SASRecRecipe):
    name = "aws-user-personalization-v2"
    description = "Transformer (SASRec family, full-softmax cross-entropy) over each user's recent events."

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
        return self.scored_top_k(batch, k, exclude_seen, allowed, device)


def shuffled_batches(n_windows: int, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Mini-batches of window indices drawn in a new random order every epoch (SASRec's
    sampling): each batch mixes short and long histories, so every target event weighs the
    same and consecutive steps are independent; each batch is trimmed to its longest window
    by the caller, and the network runs on its real positions only. (Batches of equal
    lengths gave a batch of 64 windows with 3 targets each the same step as one of 64 x 50,
    and trained much worse; see the module docstring.)"""
    order = rng.permutation(n_windows)
    return [order[i : i + batch] for i in range(0, n_windows, batch)]


__all__ = ["SASRecRecipe", "UserPersonalizationV2", "V2_HPS", "shuffled_batches", "FULL_SOFTMAX_MAX_ITEMS"]
