import numpy as np
import pytest
import torch
from torch import nn

from personalize_pipeline.recipes.early_stopping import EarlyStopping
from personalize_pipeline.recipes.training_loop import EarlyStoppingHook, TrainingPlan, bucketed_batches, run_training


def _regression(seed: int = 0) -> tuple[nn.Embedding, list[torch.Tensor], torch.Tensor]:
    """An embedding of 6 rows trained to hit fixed targets: the loss of row i is its distance."""
    torch.manual_seed(seed)
    net = nn.Embedding(6, 3)
    targets = torch.randn(6, 3)
    batches = [torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])]
    return net, batches, targets


def _loss(net: nn.Embedding, targets: torch.Tensor):
    return lambda idx: (((net(idx) - targets[idx]) ** 2).sum(-1), None)


def test_trains_and_logs_every_epoch_and_keeps_frozen_rows():
    net, batches, targets = _regression()
    before = net.weight.detach().clone()
    frozen = torch.tensor([True, False, False, True, False, False])
    plan = TrainingPlan([net.weight], epochs=30, learning_rate=0.1, frozen_rows=(net.weight, frozen))
    log = run_training(net, plan, lambda: batches, _loss(net, targets))
    assert log.stats()["epochs_run"] == 30 and len(log.epoch_seconds) == 30
    assert log.loss_by_epoch[-1] < 0.5 * log.loss_by_epoch[0]
    assert torch.equal(net.weight[frozen], before[frozen])
    assert not torch.equal(net.weight[~frozen], before[~frozen])
    assert not net.training  # left in eval mode


def test_weight_averaging_keeps_the_average_not_the_last_weights():
    net, batches, targets = _regression()
    last = []
    plan = TrainingPlan([net.weight], epochs=5, learning_rate=0.1, average_decay=0.9)
    run_training(net, plan, lambda: batches, _loss(net, targets), after_epoch=lambda e, a: last.append(a))
    average = last[-1]
    assert average.average is not None and torch.equal(net.weight.detach(), average.average[0])


def test_weight_decay_shrinks_the_matrices_but_not_biases_or_gains():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    params = list(net.parameters())
    before = [p.detach().clone() for p in params]
    batches = [torch.tensor([0])]
    # a loss with no gradient for any parameter: only the decay moves them
    plan = TrainingPlan(params, epochs=10, learning_rate=0.1, weight_decay=0.5)
    run_training(net, plan, lambda: batches, lambda idx: (sum(p.sum() for p in params) * 0.0 + torch.zeros(1), None))
    weight, bias, gain, shift = params
    np.testing.assert_allclose(weight.detach(), before[0] * (1 - 0.1 * 0.5) ** 10, rtol=1e-5)
    for p, b in zip((bias, gain, shift), before[1:], strict=True):
        assert torch.equal(p.detach(), b)
    # no decay: plain Adam, nothing moves without a gradient
    plan.weight_decay = 0.0
    run_training(net, plan, lambda: batches, lambda idx: (sum(p.sum() for p in params) * 0.0 + torch.zeros(1), None))
    np.testing.assert_allclose(weight.detach(), before[0] * (1 - 0.1 * 0.5) ** 10, rtol=1e-5)


def test_time_budgets():
    net, batches, targets = _regression()
    # after_epoch: the epoch that ends past the budget is the last
    log = run_training(net, TrainingPlan([net.weight], 50, 0.1, max_seconds=1e-9), lambda: batches, _loss(net, targets))
    assert log.stats()["epochs_run"] == 1
    # no_overrun: the first epoch stops between mini-batches once past the budget
    seen = []

    def loss(idx):
        seen.append(idx)
        return _loss(net, targets)(idx)

    plan = TrainingPlan([net.weight], 50, 0.1, max_seconds=1e-9, budget="no_overrun")
    log = run_training(net, plan, lambda: batches, loss)
    assert log.stats()["epochs_run"] == 1 and len(seen) <= 1


def test_early_stopping_stops_after_patience_and_keeps_the_best_weights():
    net, batches, targets = _regression()
    scores = iter([0.1, 0.5, 0.4, 0.3, 0.9])
    snapshots = {}

    def score() -> float:
        value = next(scores)
        snapshots[value] = net.weight.detach().clone()
        return value

    hook = EarlyStoppingHook(EarlyStopping(patience=2), score)
    log = run_training(net, TrainingPlan([net.weight], 5, 0.1), lambda: batches, _loss(net, targets), hook)
    assert log.stats()["epochs_run"] == 4 and hook.stopping.best_epoch == 2
    assert torch.equal(net.weight.detach(), snapshots[0.5])


def test_bucketed_batches_cover_every_window_once_with_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 33, 1000)
    batches = bucketed_batches(lengths, 64, rng)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    # sorted by length before cutting: a batch spans a few lengths, not the whole range
    assert max(int(np.ptp(lengths[b])) for b in batches) <= 4  # about 31 windows per length
    # batches come in random order, not shortest first
    firsts = [int(lengths[b].min()) for b in batches]
    assert firsts != sorted(firsts)


def test_learning_rate_falls_along_a_cosine_to_the_floor(monkeypatch):
    net, batches, targets = _regression()
    rates: list[float] = []
    original = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    plan = TrainingPlan([net.weight], epochs=4, learning_rate=0.1, lr_floor=0.1)
    run_training(net, plan, lambda: batches, _loss(net, targets))
    # 2 batches x 4 epochs: from the full rate down towards 10% of it
    assert rates == pytest.approx([0.01 + 0.09 * 0.5 * (1 + np.cos(np.pi * k / 8)) for k in range(8)])
    rates.clear()  # a constant rate by default
    run_training(net, TrainingPlan([net.weight], epochs=2, learning_rate=0.1), lambda: batches, _loss(net, targets))
    assert rates == [0.1] * 4
