"""The epoch / mini-batch loop every neural recipe trains with, as one named unit.

A recipe says *what* to train (:class:`TrainingPlan`: the parameters that move, epochs,
optimiser settings, weight averaging, rows kept fixed, the time budget) and supplies the
mini-batches of an epoch and the loss of one mini-batch; :func:`run_training` does the rest
the same way for aws-hrnn and its family, aws-user-personalization and
aws-user-personalization-v2:

- Adam (its fused kernel where torch has one) over the plan's parameters, one step per
  mini-batch, on the (weighted) mean loss of the batch's target events; gradients of frozen
  embedding rows are zeroed before the step
  (the item-side refresh of an UPDATE keeps the vectors of items already trained); with a
  ``weight_decay``, AdamW's decoupled decay of the weight matrices and embeddings (Loshchilov
  & Hutter, "Decoupled weight decay regularization", ICLR 2019; biases and layer-norm gains,
  the one-dimensional parameters, are not decayed, as in BERT and GPT training);
- the learning rate annealed along a cosine from ``learning_rate`` to ``lr_floor`` times it
  over the planned epochs, step by step, where the plan asks for it (Loshchilov & Hutter,
  "SGDR", 2017, without restarts): the GRU recipes at a constant rate drifted into a
  divergence late in a long training (bench/README, session 13);
- weight averaging (:class:`~.averaging.WeightAverage`): the averaged weights are what
  training keeps, unless early stopping kept better ones;
- early stopping (:mod:`.early_stopping`): after every epoch the averaged weights are scored
  (e.g. NDCG@10 on held-out newest events) and training stops ``patience`` epochs after the
  best score, keeping the best weights;
- the time budget (``max_seconds``), checked as each recipe always did: ``"after_epoch"``
  stops once an epoch ends past the budget (the HRNN family); ``"no_overrun"`` starts no
  epoch that would end past it, judging by the last epoch, and stops a first epoch that is
  longer than the whole budget between mini-batches (v2);
- length-bucketed mini-batches (:func:`bucketed_batches`): windows of similar length batched
  together, so that sparse data (a few events per user) does not run the network over padding;
- per-epoch progress: the loss of every epoch and its seconds (:class:`TrainingLog`), and an
  optional ``after_epoch`` callback (benchmarks evaluate the model there; its time does not
  count against the budget).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from torch import nn

from .averaging import WeightAverage
from .early_stopping import EarlyStopping

Batch = TypeVar("Batch")
# the loss of a mini-batch: one value per target event, and each event's weight (None = 1)
BatchLoss = tuple[torch.Tensor, torch.Tensor | None]


@dataclass
class TrainingPlan:
    trainable: list[torch.Tensor]
    epochs: int
    learning_rate: float
    betas: tuple[float, float] = (0.9, 0.999)
    average_decay: float = 0.0  # 0 = keep the last weights
    # (parameter, [rows] bool): rows of the parameter whose gradient is zeroed (kept as they are)
    frozen_rows: tuple[torch.Tensor, torch.Tensor] | None = None
    max_seconds: float = float("inf")
    budget: Literal["after_epoch", "no_overrun"] = "after_epoch"
    lr_floor: float = 1.0  # the learning rate's share left at the end of the cosine (1 = constant)
    weight_decay: float = 0.0  # AdamW's decoupled decay of the matrices (0 = plain Adam)


@dataclass
class EarlyStoppingHook:
    """Scores the weights training would keep now (the average swapped in, eval mode)."""

    stopping: EarlyStopping
    score: Callable[[], float]


@dataclass
class TrainingLog:
    loss_by_epoch: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    def stats(self) -> dict[str, Any]:
        return {
            "epochs_run": len(self.loss_by_epoch),
            "loss_by_epoch": self.loss_by_epoch,
            "seconds_per_epoch": round(float(np.mean(self.epoch_seconds)), 3) if self.epoch_seconds else None,
        }


class _Budget:
    """Wall-clock seconds spent on training (callbacks' time excluded)."""

    def __init__(self, plan: TrainingPlan):
        self.max_seconds, self.mode = plan.max_seconds, plan.budget
        self.start = time.perf_counter()

    def spent(self) -> float:
        return time.perf_counter() - self.start

    def next_epoch_overruns(self, log: TrainingLog) -> bool:
        return (
            self.mode == "no_overrun"
            and bool(log.epoch_seconds)
            and self.spent() + log.epoch_seconds[-1] > self.max_seconds
        )

    def batch_overruns(self) -> bool:
        return self.mode == "no_overrun" and self.spent() > self.max_seconds

    def epoch_overran(self) -> bool:
        return self.mode == "after_epoch" and self.spent() > self.max_seconds


def run_training(
    module: nn.Module,
    plan: TrainingPlan,
    batches: Callable[[], Iterable[Batch]],
    batch_loss: Callable[[Batch], BatchLoss],
    early_stopping: EarlyStoppingHook | None = None,
    after_epoch: Callable[[int, WeightAverage], None] | None = None,
) -> TrainingLog:
    """Train ``module`` by ``plan``: ``batches()`` gives an epoch's mini-batches (called at
    the start of each epoch), ``batch_loss`` the loss of one. Leaves the kept weights (best
    early-stopping state, else the average, else the last) in ``module``, in eval mode."""
    optimizer = _optimizer(plan)
    average = WeightAverage(plan.trainable, plan.average_decay)
    budget, log = _Budget(plan), TrainingLog()
    module.train()
    for epoch in range(1, plan.epochs + 1):
        if budget.next_epoch_overruns(log):
            break  # the next epoch would end past the time budget
        t_epoch, total, weight = time.perf_counter(), 0.0, 0.0
        epoch_batches = batches()
        n_batches = len(epoch_batches) if isinstance(epoch_batches, Sized) else 0  # 0: unknown
        for i, batch in enumerate(epoch_batches):
            if budget.batch_overruns():
                break  # a first epoch longer than the whole budget (very large data)
            if plan.lr_floor < 1.0:  # within an epoch of unknown length, its start's rate
                _anneal(optimizer, plan, (epoch - 1 + (i / n_batches if n_batches else 0.0)) / plan.epochs)
            loss, batch_weight = _step(batch_loss(batch), optimizer, average, plan.frozen_rows)
            total, weight = total + loss * batch_weight, weight + batch_weight
        log.loss_by_epoch.append(round(total / max(weight, 1e-9), 5))
        log.epoch_seconds.append(time.perf_counter() - t_epoch)
        stop = early_stopping is not None and _observe(module, epoch, early_stopping, average)
        if after_epoch is not None:
            t_callback = time.perf_counter()
            after_epoch(epoch, average)
            budget.start += time.perf_counter() - t_callback  # evaluations are not training
        if stop or budget.epoch_overran():
            break
    if early_stopping is not None and early_stopping.stopping.best_state is not None:
        module.load_state_dict(early_stopping.stopping.best_state)
    else:
        average.apply()
    module.eval()
    return log


def bucketed_batches(lengths: np.ndarray, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Mini-batches of window indices with similar lengths (so that each batch can be trimmed
    to its longest window instead of running the network over padding), in random order;
    windows are shuffled within each length."""
    order = np.lexsort((rng.random(len(lengths)), lengths))
    chunks = [order[i : i + batch] for i in range(0, len(order), batch)]
    return [chunks[i] for i in rng.permutation(len(chunks))]


def _optimizer(plan: TrainingPlan) -> torch.optim.Optimizer:
    """Adam over the plan's parameters; AdamW with the plan's decay on its matrices."""
    fused = _fusable(plan.trainable)
    if not plan.weight_decay:
        return torch.optim.Adam(plan.trainable, lr=plan.learning_rate, betas=plan.betas, fused=fused)
    groups = [
        {"params": [p for p in plan.trainable if p.ndim >= 2], "weight_decay": plan.weight_decay},
        {"params": [p for p in plan.trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=plan.learning_rate, betas=plan.betas, fused=fused)


def _fusable(params: list[torch.Tensor]) -> bool:
    """Adam's fused kernel (one pass over each parameter instead of a dozen elementwise
    ops: about 7x faster on the CPU for an item embedding) where torch has it for every
    parameter: floating point on the CPU or a CUDA device."""
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def _anneal(optimizer: torch.optim.Optimizer, plan: TrainingPlan, progress: float) -> None:
    """Set the learning rate of the point ``progress`` (0 to 1) of the planned training."""
    share = plan.lr_floor + (1.0 - plan.lr_floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    for group in optimizer.param_groups:
        group["lr"] = plan.learning_rate * share


def _step(
    batch_loss: BatchLoss,
    optimizer: torch.optim.Optimizer,
    average: WeightAverage,
    frozen_rows: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[float, float]:
    """One optimiser step on the weighted mean loss; returns (that mean, the batch's weight)."""
    loss_vec, weights = batch_loss
    if weights is None:
        loss, batch_weight = loss_vec.mean(), float(len(loss_vec))
    else:
        loss, batch_weight = (loss_vec * weights).sum() / weights.sum(), float(weights.sum())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if frozen_rows is not None and frozen_rows[0].grad is not None:
        frozen_rows[0].grad[frozen_rows[1]] = 0.0
    optimizer.step()
    average.step()
    return float(loss.detach()), batch_weight


def _observe(module: nn.Module, epoch: int, hook: EarlyStoppingHook, average: WeightAverage) -> bool:
    """Score the weights training would keep now; True = stop."""
    with average.swapped_in(), torch.no_grad():
        module.eval()
        stop = hook.stopping.observe(epoch, hook.score(), module.state_dict)
    module.train()
    return stop


__all__ = ["EarlyStoppingHook", "TrainingLog", "TrainingPlan", "bucketed_batches", "run_training"]
