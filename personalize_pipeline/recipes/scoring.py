"""Top-k from "user vectors × item matrix + bias", with Personalize's scores.

Every neural USER_PERSONALIZATION recipe scores a user the same way: a [d] user vector
(a GRU's final state, a transformer's last position) against an [m, d] item matrix plus an
[m] item bias. :class:`LinearScorer` holds the item side once per job (on the compute
device) and turns blocks of user vectors into top-k item codes and scores, where a score is
the softmax probability over the (allowed) catalogue, as Amazon Personalize reports it.

The normaliser needs no softmax pass of its own: top-k runs first on the logits the block
already holds, its best value is the row maximum, and ``sum(exp(logits - max))`` is then
taken in place over the same block (one exp pass, no [n, m] temporary).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError

DEVICES = ("auto", "cpu", "cuda")
CPU_BLOCK = 1024  # users per block on CPU: the block's logits stay near the cache
GPU_BLOCK = 16384


def resolve_device(setting: str | None = None) -> torch.device:
    """``auto`` (the default; the ``PERSONALIZE_DEVICE`` environment variable may name
    another) is CUDA when torch sees a GPU, else the CPU; ``cuda`` without a GPU is an error."""
    value = (setting or os.environ.get("PERSONALIZE_DEVICE") or "auto").strip().lower()
    if value not in DEVICES:
        raise InputError(f"device must be one of {', '.join(DEVICES)}, got {setting!r}")
    if value == "auto":
        env = os.environ.get("PERSONALIZE_DEVICE", "").strip().lower()
        value = env if env in ("cpu", "cuda") else ("cuda" if torch.cuda.is_available() else "cpu")
    if value == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda was asked for, but torch sees no CUDA device on this machine")
    return torch.device(value)


def normalised_top_k(logits: torch.Tensor, k: int, with_log_z: bool = False):
    """Top-k item codes and softmax scores of each row of ``logits`` ([n, m], -inf =
    excluded), best first, ties to the lower item code; -1 where nothing is left.
    ``logits`` is overwritten (it becomes exp(logits - max)). ``with_log_z``: the [n, 1]
    log-normaliser comes third."""
    n, m = logits.shape
    k = min(k, m)
    if k == 0 or n == 0:
        empty = (np.zeros((n, k), dtype=np.int64), np.zeros((n, k), dtype=np.float32))
        return (*empty, np.zeros((n, 1), dtype=np.float32)) if with_log_z else empty
    top_values, top_indices = torch.topk(logits, k, dim=1, sorted=True)
    top_max = top_values[:, :1].clone()
    top_max.masked_fill_(torch.isneginf(top_max), 0.0)  # a row with nothing allowed
    log_z = logits.sub_(top_max).exp_().sum(dim=1, keepdim=True).log_().add_(top_max)  # log-sum-exp
    top_scores = torch.exp(top_values - log_z)
    values, indices, scores, log_z_np = (
        top_values.cpu().numpy(),
        top_indices.cpu().numpy().astype(np.int64),
        top_scores.cpu().numpy(),
        log_z.cpu().numpy(),
    )
    order = np.lexsort((indices, -values), axis=1)  # equal scores: lower item code first
    indices, scores = np.take_along_axis(indices, order, 1), np.take_along_axis(scores, order, 1)
    excluded = np.isneginf(np.take_along_axis(values, order, 1))
    indices[excluded] = -1
    scores[excluded] = 0.0
    scores = scores.astype(np.float32, copy=False)
    return (indices, scores, log_z_np) if with_log_z else (indices, scores)


@dataclass
class LinearScorer:
    """logits = user vectors @ item_matrix.T + bias; users without a vector get ``fallback``."""

    item_matrix: torch.Tensor  # [m, d] float32, on ``device``
    bias: torch.Tensor  # [m] float32, -inf for items that are never recommended
    fallback: torch.Tensor  # [m] logits of users without a vector (e.g. log popularity)
    device: torch.device

    @classmethod
    def build(
        cls, item_matrix: torch.Tensor, bias: torch.Tensor, fallback: torch.Tensor, device: torch.device | None = None
    ) -> LinearScorer:
        device = device or torch.device("cpu")
        return cls(
            item_matrix.detach().float().contiguous().to(device),
            bias.detach().float().to(device),
            fallback.detach().float().to(device),
            device,
        )

    @property
    def n_items(self) -> int:
        return int(self.bias.shape[0])

    @property
    def block(self) -> int:
        return GPU_BLOCK if self.device.type == "cuda" else CPU_BLOCK

    def logits(self, n: int, rows: np.ndarray, vectors: torch.Tensor) -> torch.Tensor:
        """[n, m] logits on the device; ``vectors`` are those of the rows ``rows``."""
        vectors = vectors.to(self.device, non_blocking=True).float()
        if len(rows) == n:
            return torch.addmm(self.bias, vectors, self.item_matrix.T)
        out = self.fallback.expand(n, -1).clone()
        if len(rows):
            out[torch.from_numpy(rows).to(self.device)] = torch.addmm(self.bias, vectors, self.item_matrix.T)
        return out

    def top_k(
        self,
        n: int,
        rows: np.ndarray,
        vectors: torch.Tensor,
        k: int,
        allowed: np.ndarray | None = None,
        seen: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k codes and normalised scores of ``n`` users (see :func:`normalised_top_k`);
        ``allowed`` ([n, m] bool) and ``seen`` ((rows, items) pairs) exclude items."""
        return normalised_top_k(self.masked_logits(n, rows, vectors, allowed, seen), k)

    def masked_logits(
        self,
        n: int,
        rows: np.ndarray,
        vectors: torch.Tensor,
        allowed: np.ndarray | None = None,
        seen: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> torch.Tensor:
        """:meth:`logits` with the items not ``allowed`` and the ``seen`` pairs at -inf."""
        logits = self.logits(n, rows, vectors)
        if seen is not None and len(seen[0]):
            r = torch.from_numpy(np.asarray(seen[0], dtype=np.int64)).to(self.device)
            c = torch.from_numpy(np.asarray(seen[1], dtype=np.int64)).to(self.device)
            logits[r, c] = -torch.inf
        if allowed is not None:
            logits.masked_fill_(~torch.from_numpy(np.ascontiguousarray(allowed)).to(self.device), -torch.inf)
        return logits
