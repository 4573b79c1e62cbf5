"""Early stopping for the GRU family (aws-hrnn and its variants, aws-user-personalization).

The held-out split of :mod:`.early_stopping` on the GRU's training windows: a sample of the
users (``share`` of those whose newest window holds at least two transitions, at most
``cap``) lose the newest transition of their newest window as a training target (target
-1, loss weight 0). After each epoch the network reads that window up to the held-out
event, as inference reads a history (a zero state, or the user-metadata state, then the
GRU over the window's items), and ranks the whole catalogue with the output bias.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .early_stopping import HeldOutNewest, events_before, held_out_count

if TYPE_CHECKING:
    from .hrnn import GRUNet, GRUWindows
    from .repeats import RepeatMixture


@dataclass
class HeldOutWindows:
    """The held-out newest events (:class:`~.early_stopping.HeldOutNewest`: [n, bptt]
    left-aligned input windows and the [n] held-out items) with what the GRU reads besides
    the items: each window's length up to the held-out event, context codes and user."""

    held: HeldOutNewest
    lengths: torch.Tensor
    context: torch.Tensor | None
    users: torch.Tensor

    def __len__(self) -> int:
        return len(self.held.targets)

    @classmethod
    def take(
        cls,
        windows: GRUWindows,
        share: float,
        cap: int,
        rng: np.random.Generator,
        sequences: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> HeldOutWindows | None:
        """Hold out the newest transition of a sample of users, in place in ``windows``;
        None (and ``windows`` untouched) when too few qualify (:func:`.early_stopping.held_out_count`)."""
        users = windows.users.numpy()
        newest = np.r_[users[1:] != users[:-1], True] if len(users) else np.zeros(0, dtype=bool)
        lengths = (windows.targets >= 0).sum(dim=1).numpy()
        eligible = np.flatnonzero(newest & (lengths >= 2))
        n = held_out_count(len(eligible), share, cap)
        if not n:
            return None
        rows = torch.from_numpy(np.sort(rng.choice(eligible, size=n, replace=False)))
        last = torch.from_numpy(lengths).long()[rows] - 1
        targets = windows.targets[rows, last].clone()
        history = None
        if sequences is not None:  # the held-out event's position: the window's first target's + last
            positions = windows.first_target[rows].numpy() + last.numpy()
            history = events_before(sequences[0], sequences[1], positions)
        held = HeldOutNewest(windows=windows.inputs[rows].numpy().copy(), targets=targets.numpy(), history=history)
        context = windows.context[rows].clone() if windows.context is not None else None
        windows.targets[rows, last] = -1
        windows.weights[rows, last] = 0.0
        return cls(held, last + 1, context, windows.users[rows].clone())

    def ndcg_at_10(self, net: GRUNet, item_bias: torch.Tensor, repeats: RepeatMixture | None = None) -> float:
        """NDCG@10 of the held-out items under ``net`` as it is now (callers put it in eval
        mode, without gradients); ``item_bias``: the output bias, -inf for items not ranked."""
        return self.ndcg_at_10_each(net, item_bias, [repeats])[0]

    def ndcg_at_10_each(
        self, net: GRUNet, item_bias: torch.Tensor, mixtures: Sequence[RepeatMixture | None]
    ) -> list[float]:
        """:meth:`ndcg_at_10` under each of ``mixtures`` (one pass of the GRU)."""
        device = net.embedding.weight.device

        def encode(windows: np.ndarray) -> torch.Tensor:
            context = self.context.to(device) if self.context is not None else None
            return net.final_state(torch.from_numpy(windows).to(device), self.lengths, context, self.users.to(device))

        return self.held.ndcg_at_10_each(encode, net.item_vectors(), item_bias, mixtures)


__all__ = ["HeldOutWindows"]
