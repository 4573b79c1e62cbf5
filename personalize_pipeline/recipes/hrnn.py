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
  rare and left in, as in GRU4Rec.
- **Embeddings**: the input and output item embeddings are the same matrix ("constrained
  embedding", GRU4Rec's best setting), plus an output bias per item.
- **Regularisation**: dropout on the input embedding and on the GRU output.
- **Optimiser**: Adam; initialisation: embeddings uniform(±1/sqrt(d)), GRU weights orthogonal.
- ``recency_mask``: the loss weight of an event grows linearly with its time, from 0.5 for
  the oldest event to 1.0 for the newest, so recent behaviour counts more.

Scores are the softmax over the catalogue (they sum to 1, like Personalize's); items never
seen in training are not recommended; users without history get the most popular items.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..features import Features
from .base import HyperParameter, Recipe, UserBatch
from .interfaces import UserRecommender
from .scoring import DEVICES, LinearScorer, resolve_device

if TYPE_CHECKING:
    from .user_personalization import ExplorationConfig

HP = HyperParameter

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
    HP("batch_size", int, 0, 0, 4096, help="windows per mini-batch; 0 = auto (about 100 steps per epoch, 16 to 256)"),
    HP(
        "n_sample",
        int,
        0,
        0,
        65536,
        help="shared negative samples per mini-batch; 0 = auto (2048 for small data down to 512 from 1M events)",
    ),
    HP("sample_alpha", float, 0.75, 0.0, 1.0, help="negatives drawn from popularity ** alpha"),
    HP("dropout_embed", float, 0.25, 0.0, 0.9, tunable=True),
    HP("dropout_hidden", float, 0.1, 0.0, 0.9, tunable=True),
    HP(
        "weight_averaging",
        float,
        0.99,
        0.0,
        0.9999,
        help="decay of the moving average of the weights that becomes the trained model (0 = last weights)",
    ),
    HP("max_training_seconds", float, 3600.0, 1.0, 86400.0, help="stop after this many seconds"),
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
        self.drop_embed = nn.Dropout(dropout_embed)
        self.drop_hidden = nn.Dropout(dropout_hidden)
        bound = 1.0 / math.sqrt(dim)
        nn.init.uniform_(self.embedding.weight, -bound, bound)
        for name, param in self.gru.named_parameters():
            if "weight" in name:
                for chunk in param.data.chunk(3, 0):
                    nn.init.orthogonal_(chunk)
            else:
                nn.init.zeros_(param)

    # Subclasses (metadata, coldstart) override these three to add side information.
    def item_vectors(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Output (and, tied, input) vectors of the items ``idx`` (all items if None)."""
        return self.embedding.weight if idx is None else self.embedding(idx)

    def input_vectors(self, items: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        return self.item_vectors(items)

    def initial_state(self, users: torch.Tensor | None) -> torch.Tensor | None:
        return None

    def forward(
        self, items: torch.Tensor, context: torch.Tensor | None = None, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[B, T] item codes (+ [B, T, C] context codes, [B] user codes) -> [B, T, dim] states."""
        out, _ = self.gru(self.drop_embed(self.input_vectors(items, context)), self.initial_state(users))
        return self.drop_hidden(out)

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
    valid = steps[None, :] < np.minimum(remaining, bptt)[:, None]
    inputs = np.where(valid, items[np.where(valid, pos, 0)], 0)
    targets = np.where(valid, items[np.where(valid, pos + 1, 0)], -1)
    return inputs.astype(np.int64), targets.astype(np.int64), start + 1


class GRURecipe(Recipe):
    """The GRU model behind aws-hrnn and its variants (training, UPDATE, scoring, state);
    :class:`HRNN` serves it as a USER_PERSONALIZATION recipe, aws-personalized-ranking as a
    PERSONALIZED_RANKING one."""

    hyperparameters: ClassVar[tuple[HyperParameter, ...]] = PERSONALIZE_HRNN_HPS + TRAINING_HPS
    # set by fit / load; the optional ones may be absent on older saved versions
    net: GRUNet
    latest_time: float | None
    user_state: np.ndarray | None
    user_history_length: np.ndarray | None
    _scorer: LinearScorer | None

    def _build(self, n_items: int) -> GRUNet:
        p = self.params
        return GRUNet(n_items, p["hidden_dimension"], p["dropout_embed"], p["dropout_hidden"])

    def _prepare(self, features: Features) -> None:
        """Hook for side information (metadata recipes); called before ``_build``."""

    def _context(self, context: np.ndarray | None) -> np.ndarray | None:
        """Hook: per-event context codes as the model reads them (None = no context)."""
        return None

    def _batch_extras(self, idx: torch.Tensor) -> None:
        """Hook called for every training mini-batch (coldstart drops embeddings)."""

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
        if previous_item_ids is None or not getattr(self, "fitted", False):
            return self.fit(features, seed=seed)
        warm = (self.net, np.asarray(previous_item_ids, dtype=object))
        latest_time = getattr(self, "latest_time", None)
        if latest_time is None:
            return self.fit(features, seed=seed, warm_start=warm)
        return self.fit(
            features,
            seed=seed,
            warm_start=warm,
            only_after=float(latest_time),
            previous_user_ids=previous_user_ids,
        )

    def _warm_start(
        self, old_net: GRUNet, old_item_ids: np.ndarray, new_item_ids: np.ndarray, old_trained: np.ndarray | None = None
    ) -> None:
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
        self._warm_items = int(carried.sum())
        # rows whose learned vectors are kept as they are in an item-side refresh: items the
        # old model knew and had trained (an UPDATE still learns the others)
        old_keep = getattr(old_net, "embed_keep", None)
        if old_keep is not None:
            trained_before = old_keep.numpy() > 0
        elif old_trained is not None and len(old_trained) == len(old_item_ids):
            trained_before = np.asarray(old_trained, dtype=bool)
        else:
            trained_before = np.ones(len(old_item_ids), dtype=bool)
        self._carried = carried & trained_before[np.maximum(where, 0)]

    def _extra_negatives(self, positions: torch.Tensor) -> torch.Tensor | None:
        """Hook: per target event (positions in the sorted interactions), extra item codes
        to use as negatives ([N, M], -1 = none), e.g. impressed but ignored items."""
        return None

    def fit(
        self,
        features: Features,
        seed: int = 42,
        warm_start: tuple[GRUNet, np.ndarray] | None = None,
        only_after: float | None = None,
        previous_user_ids: np.ndarray | None = None,
    ) -> GRURecipe:
        """Train on ``features``; ``warm_start`` = (FULL model, its item ids) fine-tunes that
        model instead of starting from scratch; ``only_after`` (a timestamp) restricts the
        training windows to those holding events newer than it (one pass, item side only);
        with ``previous_user_ids`` the cached states of users without new events carry over
        (valid only then: the network itself does not move)."""
        p = self.params
        reuse = None
        if (
            only_after is not None
            and previous_user_ids is not None
            and getattr(self, "user_history_length", None) is not None
        ):
            reuse = (self.user_state, self.user_history_length, np.asarray(previous_user_ids, dtype=object), only_after)
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        everyone, features = features, self.training_set(features)  # user states: everyone's events
        n_items = features.n_items
        indptr, items = features.sequences()
        timestamps = features.interactions["timestamp"].to_numpy()
        counts = np.bincount(items, minlength=n_items).astype(np.float64)
        old_trained = getattr(self, "trained", None)
        every_time = everyone.interactions["timestamp"].to_numpy()
        self.latest_time = float(every_time.max()) if len(every_time) else None
        self.popularity = counts
        self.trained = counts > 0
        self._warm = warm_start is not None
        self._prepare(features)
        self.net = self._build(n_items)
        self._scorer = None  # the item side of scoring is rebuilt from the new network
        self._warm_items = 0
        if warm_start is not None:
            self._warm_start(warm_start[0], warm_start[1], features.item_ids, old_trained)
        device = resolve_device(p["device"])
        self.net.to(device)  # back on the CPU before the states are cached and the model saved

        inputs, targets, first_target = make_windows(indptr, items, p["bptt"])
        all_events = int((targets >= 0).sum())
        if only_after is not None:
            steps = np.arange(p["bptt"])[None, :]
            newer = (targets >= 0) & (
                timestamps[np.clip(first_target[:, None] + steps, 0, len(items) - 1)] > only_after
            )
            keep = newer.any(axis=1)
            inputs, targets, first_target = inputs[keep], targets[keep], first_target[keep]
        window_users = np.searchsorted(indptr, first_target - 1, side="right") - 1
        context = self._context(features.context_matrix())
        if context is not None:
            ctx_pos = np.clip(first_target[:, None] - 1 + np.arange(p["bptt"])[None, :], 0, len(items) - 1)
            window_context = torch.from_numpy(context[ctx_pos])  # [W, T, C]
        U = torch.from_numpy(window_users.astype(np.int64))
        weights = np.ones(targets.shape, dtype=np.float32)
        if p["recency_mask"] and len(timestamps):
            t_min, t_max = float(timestamps.min()), float(timestamps.max())
            pos = np.clip(first_target[:, None] + np.arange(p["bptt"])[None, :], 0, len(timestamps) - 1)
            span = max(t_max - t_min, 1.0)
            weights = (0.5 + 0.5 * (timestamps[pos] - t_min) / span).astype(np.float32)
        weights[targets < 0] = 0.0

        q = counts ** p["sample_alpha"]
        q[~self.trained] = 0.0
        q = q / q.sum()
        n_events = int((targets >= 0).sum())
        # as many negatives as a FULL training of this data would use (not more because an
        # UPDATE's pass covers fewer events)
        n_sample = min(self.negatives(all_events), int(self.trained.sum()))
        log_q_all = torch.from_numpy(np.log(np.maximum(q * n_sample, 1e-12))).float().to(device)
        q_cum = np.cumsum(q)

        X, Y, Wt = torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(weights)
        item_side_only = only_after is not None and warm_start is not None
        if item_side_only:
            # item-side refresh: item biases and the embeddings of items new since the
            # warm-start model move (as outputs: the user states come from the frozen
            # network without gradients); the network and the known items' vectors stay
            trainable = [self.net.embedding.weight, self.net.bias]
            frozen_rows = (
                torch.from_numpy(self._carried).to(device) if getattr(self, "_carried", None) is not None else None
            )
        else:
            trainable, frozen_rows = list(self.net.parameters()), None
        optimizer = torch.optim.Adam(trainable, lr=p["learning_rate"])
        n_windows = len(X)
        batch, epochs = self.schedule(n_windows, n_events)
        if only_after is not None:  # one pass over the new windows, in full-size batches
            epochs = 1 if n_windows else 0
            batch = p["batch_size"] or 256
        elif warm_start is not None:
            epochs = max(1, epochs // 4)
        target_pos = torch.from_numpy(first_target.astype(np.int64))
        steps_t = torch.arange(p["bptt"])
        # the model kept is a moving average of the weights over the last ~1/(1 - decay)
        # steps: the trajectory of a small-batch Adam run is noisy from step to step, and
        # the average ranks better than any single point of it (not for the one-pass
        # item-side refresh of an UPDATE)
        average = [t.detach().clone() for t in trainable] if p["weight_averaging"] > 0 and only_after is None else None
        update_average = torch.optim.swa_utils.get_ema_multi_avg_fn(p["weight_averaging"])
        start = time.perf_counter()
        self.loss_history: list[float] = []
        epoch_seconds: list[float] = []
        self.net.train()
        for _epoch in range(epochs):
            t_epoch = time.perf_counter()
            order = torch.from_numpy(rng.permutation(n_windows))
            total, denom = 0.0, 0.0
            for b in range(0, n_windows, batch):
                idx = order[b : b + batch]
                mask_cpu = Y[idx] >= 0
                positions = (target_pos[idx][:, None] + steps_t[None, :])[mask_cpu]
                x, y, w, mask = (t.to(device, non_blocking=True) for t in (X[idx], Y[idx], Wt[idx], mask_cpu))
                self._batch_extras(idx)
                ctx = window_context[idx].to(device) if context is not None else None
                with torch.set_grad_enabled(not item_side_only):
                    states = self.net(x, ctx, U[idx].to(device))[mask]  # [N, d]
                pos_items = y[mask]
                w = w[mask]
                neg = torch.from_numpy(np.minimum(np.searchsorted(q_cum, rng.random(n_sample)), n_items - 1)).to(device)
                out_bias = self.net.bias - log_q_all  # logQ-corrected output bias
                pos_logit = (states * self.net.item_vectors(pos_items)).sum(-1) + out_bias[pos_items]
                neg_logit = torch.addmm(out_bias[neg], states, self.net.item_vectors(neg).T)  # [N, S], one fused op
                # cross-entropy of the positive against positive + negatives, without
                # materialising the concatenation (accidental hits are rare and left in,
                # as in GRU4Rec)
                loss_vec = torch.logaddexp(pos_logit, torch.logsumexp(neg_logit, dim=1)) - pos_logit
                extra = self._extra_negatives(positions)
                if extra is not None:
                    extra = extra.to(device)
                    # items shown with the event but not chosen (impressions): a pairwise
                    # (BPR) term asks the chosen item to score above each of them
                    present = (extra >= 0).float()
                    safe = extra.clamp(min=0)
                    raw_pos = pos_logit + log_q_all[pos_items]
                    extra_logit = (
                        torch.bmm(self.net.item_vectors(safe), states.unsqueeze(-1)).squeeze(-1) + self.net.bias[safe]
                    )
                    pairwise = torch.nn.functional.softplus(extra_logit - raw_pos[:, None]) * present
                    loss_vec = loss_vec + pairwise.sum(1) / present.sum(1).clamp(min=1.0)
                loss = (loss_vec * w).sum() / w.sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if frozen_rows is not None and self.net.embedding.weight.grad is not None:
                    self.net.embedding.weight.grad[frozen_rows] = 0.0
                optimizer.step()
                if average is not None:
                    update_average(average, [t.detach() for t in trainable], None)
                total += float(loss.detach()) * float(w.sum())
                denom += float(w.sum())
            self.loss_history.append(round(total / max(denom, 1e-9), 5))
            epoch_seconds.append(time.perf_counter() - t_epoch)
            if time.perf_counter() - start > p["max_training_seconds"]:
                break
        if average is not None:
            with torch.no_grad():
                for param, averaged in zip(trainable, average, strict=True):
                    param.copy_(averaged)
        self.net.eval()
        self.net.to("cpu")
        self.fitted = True
        self._finish_fit()
        self._cache_user_states(everyone, reuse)
        self._stats = {
            "epochs_run": len(self.loss_history),
            "loss_by_epoch": self.loss_history,
            "seconds_per_epoch": round(float(np.mean(epoch_seconds)), 3) if epoch_seconds else None,
            "training_events": n_events,
            "windows": n_windows,
            "batch_size": batch,
            "torch_threads": torch.get_num_threads(),
            "warm_started_items": self._warm_items,
            "users_dropped_by_history_percentiles": self.users_dropped_by_history_percentiles,
        }
        return self

    def _finish_fit(self) -> None:
        """Hook: adjust the trained model before user states are cached (subclasses)."""

    @torch.no_grad()
    def _cache_user_states(self, features: Features, reuse: tuple | None = None) -> None:
        """The final GRU state of every user over the histories the solution version stores,
        so that batch inference over those users is a lookup + matrix multiply. ``reuse`` =
        (old states, old history lengths, old user ids, time): users without events after
        that time and with an unchanged history length keep their old state."""
        self.user_state = None
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
        self.user_state = states
        self.user_history_length = np.diff(indptr).astype(np.int32)

    def schedule(self, n_windows: int, n_events: int) -> tuple[int, int]:
        """Mini-batch size and epochs: explicit values win; ``0`` (auto) gives about 100
        optimizer steps per epoch (16 to 256 windows per batch) and 20 epochs for small
        data down to 4 for millions of events, which keeps training near-linear in size;
        wider models (above Personalize's HRNN default of 43) converge, then overfit, in
        proportionally fewer epochs, so they get that many fewer (at least 2)."""
        p = self.params
        batch = p["batch_size"] or int(np.clip(round(n_windows / 100), 16, 256))
        auto = np.clip(round(3_000_000 / max(n_events, 1)), 4, 20) * min(1.0, 43 / p["hidden_dimension"])
        epochs = p["epochs"] or int(max(2, round(auto)))
        return batch, epochs

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
        return dict(getattr(self, "_stats", {}))

    # --- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def logits_tensor(self, batch: UserBatch) -> torch.Tensor:
        """[n, n_items] logits (torch, multi-threaded) from each user's last ``bptt``
        history items; items that may not be recommended get -inf through the bias."""
        self._check_fitted()
        n = len(batch)
        blocked = torch.from_numpy(np.where(self.recommendable(), 0.0, -np.inf).astype(np.float32))
        rows, h = self._user_vectors(batch)
        scores = torch.addmm(self.net.bias + blocked, h, self.net.item_vectors().T) if len(rows) else None
        if len(rows) == n:
            return scores if scores is not None else torch.empty((0, len(self.popularity)))  # None: n == 0
        out = torch.empty((n, len(self.popularity)), dtype=torch.float32)
        no_history = np.ones(n, dtype=bool)
        no_history[rows] = False  # popularity order for these
        out[torch.from_numpy(no_history)] = torch.from_numpy(np.log1p(self.popularity).astype(np.float32)) + blocked
        if scores is not None:
            out[torch.from_numpy(rows)] = scores
        return out

    @torch.no_grad()
    def _user_vectors(self, batch: UserBatch) -> tuple[np.ndarray, torch.Tensor]:
        """(rows of the batch with history, their [n, dim] GRU states over the last ``bptt``
        items); cached states are looked up for a solution version's own users."""
        lengths = np.diff(batch.history_indptr)
        use = np.minimum(lengths, self.params["bptt"])
        rows = np.flatnonzero(use > 0)
        cache = getattr(self, "user_state", None)
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
        dev = self.net.embedding.weight.device  # the network's device (a GPU during training there)
        h = self.net.final_state(
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
        return self.trained

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
        cached = getattr(self, "_scorer", None)
        if cached is None or cached.device != device:
            with torch.no_grad():
                blocked = torch.from_numpy(np.where(self.recommendable(), 0.0, -np.inf).astype(np.float32))
                fallback = torch.from_numpy(np.log1p(self.popularity).astype(np.float32)) + blocked
                cached = LinearScorer.build(self.net.item_vectors(), self.net.bias + blocked, fallback, device)
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
        scorer = self.linear_scorer(device)
        n = len(batch)
        k_eff = min(k, len(self.popularity))
        items = np.empty((n, k_eff), dtype=np.int64)
        scores = np.empty((n, k_eff), dtype=np.float32)
        for lo in range(0, n, scorer.block):
            hi = min(lo + scorer.block, n)
            part = batch.rows(lo, hi) if (lo, hi) != (0, n) else batch
            rows, h = self._user_vectors(part)
            seen = part.seen_mask_rows_cols() if exclude_seen else None
            items[lo:hi], scores[lo:hi] = scorer.top_k(
                hi - lo, rows, h, k, allowed[lo:hi] if allowed is not None else None, seen
            )
        return items, scores

    # --- persistence ----------------------------------------------------------------------------
    def _restore(self, state: dict[str, np.ndarray]) -> None:
        """Hook: rebuild side information saved in the state before ``_build``."""

    def state(self) -> dict[str, np.ndarray]:
        out = {f"net.{k}": v.detach().numpy() for k, v in self.net.state_dict().items()}
        out["popularity"] = self.popularity
        out["trained"] = self.trained
        if getattr(self, "latest_time", None) is not None:
            out["latest_time"] = np.array(self.latest_time)
        if getattr(self, "user_state", None) is not None:
            out["user_state"] = self.user_state
            out["user_history_length"] = self.user_history_length
        return out

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.popularity = np.asarray(state["popularity"], dtype=np.float64)
        self.trained = np.asarray(state["trained"], dtype=bool)
        self.latest_time = float(state["latest_time"]) if "latest_time" in state else None
        self.user_state = np.asarray(state["user_state"], dtype=np.float32) if "user_state" in state else None
        self.user_history_length = np.asarray(state["user_history_length"]) if "user_history_length" in state else None
        self._restore(state)
        self.net = self._build(len(self.popularity))
        self.net.load_state_dict(
            {k[4:]: torch.from_numpy(np.array(v)) for k, v in state.items() if k.startswith("net.")}
        )
        self.net.eval()
        self.n_items = len(self.popularity)


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
