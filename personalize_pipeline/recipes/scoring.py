"""Top-k from "user vectors × item matrix + bias", with Personalize's scores.

Every neural USER_PERSONALIZATION recipe scores a user the same way: a [d] user vector
(a GRU's final state, a transformer's last position) against an [m, d] item matrix plus an
[m] item bias. :class:`LinearScorer` holds the item side once per job (on the compute
device) and turns blocks of user vectors into top-k item codes and scores, where a score is
the softmax probability over the (allowed) catalogue, as Amazon Personalize reports it.

The normaliser needs no softmax pass of its own: top-k runs first on the logits the block
already holds (:func:`threshold_top_k` on CPU: group maxima give a floor, only the few items
above it are sorted), its best value is the row maximum, and ``log(sum(exp(logits - max)))``
is then one more read of the same block (on CPU both are compiled loops,
:mod:`.block_kernels`; no [n, m] temporary). Blocks go into a buffer each thread reuses.
Scores mixed with the user's history (:mod:`.repeats`) keep that single pass
(:func:`repeat_mixed_top_k`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import InputError
from .repeats import P_SEEN_RANGE, RepeatHistory, RepeatMixture, mix_repeats_with_log_z, revived

if TYPE_CHECKING:
    from .base import UserBatch

DEVICES = ("auto", "cpu", "cuda")
CPU_BLOCK_VALUES = 2_500_000  # logits per block on CPU (250 users at 10k items): 10 MB stay in cache
GPU_BLOCK = 16384
GROUP = 64  # item codes per group of the top-k's threshold (see threshold_top_k): 8 AVX2 vectors
PRECISIONS = ("float32", "bf16")
# bound on |bf16 product - float32 addmm| per unit of |user| * |item| (augmented with the bias):
# inputs rounded to bf16 (2 * 2**-8), the bf16 result (2**-8), float32 sums of 65 terms
BF16_ERROR = 3.1 * 2.0**-8
# relative difference of a bf16 score from float32's that the tests allow (the normaliser sums
# bf16 logits' exps; measured: bench/README.md, "batch inference (session 9)")
BF16_SCORE_RTOL = 2e-3
_PRECISION: ContextVar[str] = ContextVar("scoring_precision", default="float32")


def bf16_available() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX through oneDNN)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and torch.backends.cpu.get_cpu_capability() in (
            "AVX512",
            "AMX",
        )
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(setting: str | None = None) -> str:
    """``scoring_precision`` of a batch job: float32 (the default: exact float32 logits) or
    bf16 (CPUs with native bf16 only; see :meth:`LinearScorer.top_k`)."""
    value = (setting or "float32").strip().lower()
    if value not in PRECISIONS:
        raise InputError(f"scoring_precision must be one of {', '.join(PRECISIONS)}, got {setting!r}")
    if value == "bf16" and not bf16_available():
        raise InputError("scoring_precision bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX); this one has none")
    return value


@contextmanager
def scoring_precision(value: str) -> Iterator[None]:
    """Score with ``value`` (see :func:`resolve_precision`) inside the block, on this thread."""
    token = _PRECISION.set(value)
    try:
        yield
    finally:
        _PRECISION.reset(token)


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


def exact_top_k(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest entries of each row of ``values`` ([n, c], k <= c) as (values,
    positions), best first, equal values in ascending position. ``torch.topk`` may take any
    of several entries equal to its k-th value; rows where that choice matters take the
    lowest positions instead, so the result never depends on the kernel."""
    top_values, top_positions = torch.topk(values, k, dim=1, sorted=True)
    kth = top_values[:, -1:]
    at_kth = values == kth
    surplus = at_kth.sum(1) > (top_values == kth).sum(1)  # more entries tie for the last places
    if bool(surplus.any()):
        rows = surplus.nonzero()[:, 0]
        tied, tied_kth = values[rows], kth[rows]
        above, level = tied > tied_kth, at_kth[rows]
        keep = above | (level & (level.cumsum(1) <= k - above.sum(1, keepdim=True)))
        top_positions[rows] = keep.nonzero()[:, 1].view(len(rows), k)  # k per row, ascending
        top_values[rows] = tied.gather(1, top_positions[rows])
    order = np.lexsort((top_positions.cpu().numpy(), -top_values.cpu().numpy()), axis=1)
    order_t = torch.from_numpy(order).to(values.device)
    return top_values.gather(1, order_t), top_positions.gather(1, order_t)


def descending_key(values: np.ndarray) -> np.ndarray:
    """uint64 keys (< 2**32) that sort float32 ``values`` from the largest down; 0.0 and -0.0
    get the same key."""
    bits = (values + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into 0.0
    ascending = np.where(bits >> 31 == 1, ~bits, bits | np.uint32(0x80000000))
    return (~ascending).astype(np.uint64)


def threshold_top_k(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`exact_top_k` of CPU ``logits`` ([n, m], k <= m) with item codes as positions,
    without a top-k over whole rows; excluded items (-inf) come back as code -1.

    The codes are cut into groups of up to ``GROUP``; a value at or below the k-th largest
    group maximum is a floor under the row's k-th value (k groups hold an item at least that
    high), so the top k are among the items at or above it, about k + 4 per row at m = 10,000,
    k = 25, ties included; :func:`.block_kernels.block_top_k` finds and ranks them in
    compiled loops, a row at a time."""
    from . import block_kernels  # numba: imported when a block is first scored

    n = len(logits)
    top_values = np.empty((n, k), dtype=np.float32)
    top_codes = np.empty((n, k), dtype=np.int64)
    block_kernels.block_top_k(_contiguous(logits), group_size(logits.shape[1], k), k, top_values, top_codes)
    return torch.from_numpy(top_values), torch.from_numpy(top_codes)


def group_size(m: int, k: int) -> int:
    """Item codes per group of the top-k's floor, with at least k groups (k <= m); the codes
    after the last whole group belong to none."""
    return max(1, min(GROUP, m // k))


def _contiguous(logits: torch.Tensor) -> np.ndarray:
    """CPU ``logits`` as a C-contiguous float32 numpy array (a view where it already is one)."""
    return np.ascontiguousarray(logits.numpy(), dtype=np.float32)


def top_k_candidates(
    logits: torch.Tensor, k: int, margin: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, codes, values) of the entries of CPU ``logits`` at or above the floor of
    :func:`threshold_top_k` less ``margin`` ([n, 1]: the top k of values that are each
    off by at most margin / 2 are among them), codes ascending within each row; -inf never.
    Only the groups whose maximum reaches the floor are scanned (about k + 4 of m / GROUP)."""
    n, m = logits.shape
    group = group_size(m, k)
    n_groups = m // group
    values = logits.numpy()
    body = values[:, : n_groups * group].reshape(n, n_groups, group)
    group_max = torch.from_numpy(body).amax(2).numpy()
    floor = np.partition(group_max, n_groups - k, axis=1)[:, n_groups - k : n_groups - k + 1]  # k-th largest
    if margin is not None:
        floor = floor - margin
    floor = np.maximum(floor, np.finfo(np.float32).min)  # never -inf: excluded items are no candidates
    group_rows, groups = np.nonzero(group_max >= floor)  # row-major
    scanned = np.take(body.reshape(n * n_groups, group), group_rows * n_groups + groups, axis=0)  # [reached, group]
    hit, offset = np.divmod(np.flatnonzero(scanned >= floor[group_rows]), group)  # flat: 2-d nonzero is slow
    rows, codes, found = group_rows[hit], groups[hit] * group + offset, scanned[hit, offset]
    if n_groups * group < m:  # the last few codes belong to no group: scan them all
        tail = values[:, n_groups * group :]
        tail_rows, tail_codes = np.nonzero(tail >= floor)
        rows = np.concatenate([rows, tail_rows])
        codes = np.concatenate([codes, tail_codes + n_groups * group])
        found = np.concatenate([found, tail[tail_rows, tail_codes]])
        order = np.argsort(rows, kind="stable")  # row by row, codes still ascending within each
        rows, codes, found = rows[order], codes[order], found[order]
    return rows, codes, found


def rank_candidates(
    n: int, k: int, rows: np.ndarray, codes: np.ndarray, candidates: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """The best ``k`` candidates of each of ``n`` rows (row-major, codes ascending within a
    row) as [n, k] (values, codes), best first, ties to the lower code; -inf / -1 pad."""
    order = np.argsort(rows.astype(np.uint64) << 32 | descending_key(candidates), kind="stable")
    rows, codes, candidates = rows[order], codes[order], candidates[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)  # place within the row
    keep = rank < k
    top_values = np.full((n, k), -np.inf, dtype=np.float32)
    top_codes = np.full((n, k), -1, dtype=np.int64)
    top_values[rows[keep], rank[keep]] = candidates[keep]
    top_codes[rows[keep], rank[keep]] = codes[keep]
    return torch.from_numpy(top_values), torch.from_numpy(top_codes)


def normalised_top_k(logits: torch.Tensor, k: int, with_log_z: bool = False, log_z: torch.Tensor | None = None):
    """Top-k item codes and softmax scores of each row of ``logits`` ([n, m], -inf =
    excluded), best first, ties to the lower item code; -1 where nothing is left.
    On a GPU ``logits`` is overwritten (it becomes exp(logits - max)) unless the [n, 1]
    ``log_z`` is given (then no exp pass is made). ``with_log_z``: the [n, 1] log-normaliser comes third."""
    n, m = logits.shape
    k = min(k, m)
    if k == 0 or n == 0:
        empty = (np.zeros((n, k), dtype=np.int64), np.zeros((n, k), dtype=np.float32))
        return (*empty, np.zeros((n, 1), dtype=np.float32)) if with_log_z else empty
    top = threshold_top_k if logits.device.type == "cpu" else exact_top_k
    top_values, top_codes = top(logits, k)
    if log_z is None:
        top_max = top_values[:, :1].clone()  # the row maximum
        top_max.masked_fill_(torch.isneginf(top_max), 0.0)  # a row with nothing allowed
        log_z = log_sum_exp(logits, top_max)
    top_scores = torch.exp(top_values.double() - log_z)  # log_z: float64 on a CPU
    indices, scores = top_codes.cpu().numpy().astype(np.int64), top_scores.cpu().numpy()
    excluded = np.isneginf(top_values.cpu().numpy())
    indices[excluded] = -1
    scores[excluded] = 0.0
    scores = scores.astype(np.float32)
    return (indices, scores, log_z.float().cpu().numpy()) if with_log_z else (indices, scores)


def column_positions(columns: np.ndarray, m: int) -> np.ndarray:
    """[m] position of each of ``m`` item codes in ``columns`` (-1: not among them)."""
    position = np.full(m, -1, dtype=np.int64)
    position[columns] = np.arange(len(columns))
    return position


def repeat_mixed_top_k(
    logits: torch.Tensor,
    k: int,
    rows: np.ndarray,
    items: np.ndarray,
    mixture: RepeatMixture,
    columns: np.ndarray | None = None,
    signals: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`normalised_top_k` of CPU ``logits`` mixed with the history pairs (``rows``,
    ``items``; their events' ``signals`` where known) as :func:`.repeats.mix_repeats` mixes
    them, with the one exp pass of the unmixed path: the history's logits are read out and
    set to -inf, the top k of the other items and their normaliser come from the block as
    without mixing, the history's share of the normaliser from the few values read out; the
    mixed history items then join the rows' top k where they reach its k-th value. ``logits``
    is overwritten. Returns (codes, scores, the [n, 1] mixed log-normaliser, the [n,
    len(columns)] mixed logits of the item codes ``columns`` or None)."""
    from . import block_kernels

    n, m = logits.shape
    k = min(k, m)
    values = logits.numpy()  # the block: the history goes to -inf in it
    pairs = mixture.pairs(rows, items, signals)
    shares = mixture.row_shares(pairs, n)
    r, c, weights = pairs.rows, pairs.items, pairs.weights  # fresh arrays, compacted in place
    seen = np.empty(len(r), dtype=np.float32)
    kept = block_kernels.take_history(values, r, c, weights, revived(mixture, c), seen)
    r, c, seen, weights = r[:kept], c[:kept], seen[:kept], weights[:kept]
    top_values = np.empty((n, k), dtype=np.float32)
    top_codes = np.empty((n, k), dtype=np.int64)
    log_z = np.empty(n, dtype=np.float64)
    starts = np.searchsorted(r, np.arange(n + 1))
    wanted = np.asarray(columns if columns is not None else [], dtype=np.int64)
    picked = np.empty((n, len(wanted)), dtype=np.float32)  # values[:, columns], read by the row loop
    block_kernels.block_repeat_mixed_top_k(
        values,
        group_size(m, k),
        k,
        starts,
        c,
        seen,
        weights,
        shares,
        mixture.weight,
        P_SEEN_RANGE,
        top_values,
        top_codes,
        log_z,
        wanted,
        picked,
    )  # seen: now the mixed logits
    if columns is not None:
        at = column_positions(columns, m)[c]
        picked[r[at >= 0], at[at >= 0]] = seen[at >= 0]
    scores = np.exp(top_values - log_z[:, None]).astype(np.float32)
    excluded = np.isneginf(top_values)
    top_codes[excluded], scores[excluded] = -1, 0.0
    return top_codes, scores, log_z[:, None].astype(np.float32), picked if columns is not None else None


def log_sum_exp(logits: torch.Tensor, top_max: torch.Tensor) -> torch.Tensor:
    """[n, 1] log(sum(exp(logits))) of each row, given its maximum ``top_max`` ([n, 1], 0
    where the row is all -inf), or any shift at or above it by less than 87. On a CPU it is
    float64 and ``logits`` stay as they are (:func:`.block_kernels.block_log_sum_exp`: one
    compiled pass); on a GPU it is float32 and ``logits`` become exp(logits - max)."""
    if logits.device.type != "cpu":
        return logits.sub_(top_max).exp_().sum(dim=1, keepdim=True).log_().add_(top_max)
    from . import block_kernels

    out = np.empty(len(logits), dtype=np.float64)
    shift = np.ascontiguousarray(top_max.numpy()[:, 0], dtype=np.float32)
    block_kernels.block_log_sum_exp(_contiguous(logits), shift, out)
    return torch.from_numpy(out[:, None])


@dataclass
class LinearScorer:
    """logits = user vectors @ item_matrix.T + bias; users without a vector get ``fallback``."""

    item_matrix: torch.Tensor  # [m, d] float32, on ``device``
    bias: torch.Tensor  # [m] float32, -inf for items that are never recommended
    fallback: torch.Tensor  # [m] logits of users without a vector (e.g. log popularity)
    device: torch.device
    buffers: threading.local = field(default_factory=threading.local, repr=False, compare=False)
    low: Bf16Items | None = field(default=None, repr=False, compare=False)  # see bf16_items
    augmented: torch.Tensor | None = field(default=None, repr=False, compare=False)  # see with_bias
    # how the users' histories mix the scores (None: scores as they are); see :mod:`.repeats`
    repeats: RepeatMixture | None = None

    @classmethod
    def build(
        cls,
        item_matrix: torch.Tensor,
        bias: torch.Tensor,
        fallback: torch.Tensor,
        device: torch.device | None = None,
        repeats: RepeatMixture | None = None,
    ) -> LinearScorer:
        device = device or torch.device("cpu")
        return cls(
            item_matrix.detach().float().contiguous().to(device),
            bias.detach().float().to(device),
            fallback.detach().float().to(device),
            device,
            repeats=repeats,
        )

    @property
    def n_items(self) -> int:
        return int(self.bias.shape[0])

    @property
    def block(self) -> int:
        return GPU_BLOCK if self.device.type == "cuda" else max(16, CPU_BLOCK_VALUES // max(self.n_items, 1))

    def block_buffer(self, n: int) -> torch.Tensor:
        """[n, m] float32 on the device, kept per thread and reused from block to block (a
        fresh [block, m] tensor per block costs page faults and cache misses)."""
        buffer = getattr(self.buffers, "logits", None)
        if buffer is None or len(buffer) < n:
            buffer = self.buffers.logits = torch.empty((max(n, self.block), self.n_items), device=self.device)
        return buffer[:n]

    def warm_up(self) -> None:
        """Score one user with and without a history (the compiled loops of a CPU get
        loaded, or compiled on their first use on this machine)."""
        vectors = torch.zeros((1, self.item_matrix.shape[1]))
        history = (np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64), None)
        self.top_k(1, np.zeros(1, dtype=np.int64), vectors, 1)
        self.top_k(1, np.zeros(1, dtype=np.int64), vectors, 1, history=history)

    def with_bias(self) -> torch.Tensor:
        """[m, d + 1] the item matrix with the bias as its last column, built on first use."""
        if self.augmented is None:
            self.augmented = torch.cat([self.item_matrix, self.bias[:, None]], dim=1).contiguous()
        return self.augmented

    def logits(self, n: int, rows: np.ndarray, vectors: torch.Tensor) -> torch.Tensor:
        """[n, m] logits on the device; ``vectors`` are those of the rows ``rows``. The
        tensor is this thread's block buffer: the next call overwrites it."""
        vectors = vectors.to(self.device, non_blocking=True).float()
        out = self.block_buffer(n)
        if len(rows) == n and self.device.type == "cpu":  # the bias as one more column: no pass to copy it in
            ones = torch.ones((n, 1), dtype=vectors.dtype)
            return torch.mm(torch.cat([vectors, ones], dim=1), self.with_bias().T, out=out)
        if len(rows) == n:
            return torch.addmm(self.bias, vectors, self.item_matrix.T, out=out)
        out.copy_(self.fallback.expand(n, -1))
        if len(rows):
            out[torch.from_numpy(rows).to(self.device)] = torch.addmm(self.bias, vectors, self.item_matrix.T)
        return out

    def batch_top_k(
        self,
        batch: UserBatch,
        user_vectors: Callable[[UserBatch], tuple[np.ndarray, torch.Tensor]],
        k: int,
        exclude_seen: bool = False,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`top_k` of every user of ``batch``, ``block`` users at a time; ``user_vectors``
        maps a block to (rows that have a vector, their vectors); the other rows get the
        fallback logits. With ``repeats`` the users' histories mix the scores (see
        :mod:`.repeats`), unless ``exclude_seen`` leaves their items out anyway."""
        n = len(batch)
        k_eff = min(k, self.n_items)
        items = np.empty((n, k_eff), dtype=np.int64)
        scores = np.empty((n, k_eff), dtype=np.float32)
        for lo in range(0, n, self.block):
            hi = min(lo + self.block, n)
            part = batch.rows(lo, hi) if (lo, hi) != (0, n) else batch
            rows, vectors = user_vectors(part)
            seen = part.seen_mask_rows_cols() if exclude_seen else None
            history = part.repeat_history() if self.repeats is not None and not exclude_seen else None
            items[lo:hi], scores[lo:hi] = self.top_k(
                hi - lo, rows, vectors, k, allowed[lo:hi] if allowed is not None else None, seen, history
            )
        return items, scores

    def top_k(
        self,
        n: int,
        rows: np.ndarray,
        vectors: torch.Tensor,
        k: int,
        allowed: np.ndarray | None = None,
        seen: tuple[np.ndarray, np.ndarray] | None = None,
        history: RepeatHistory | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k codes and normalised scores of ``n`` users (see :func:`normalised_top_k`);
        ``allowed`` ([n, m] bool) and ``seen`` ((rows, items) pairs) exclude items;
        ``history`` ((rows, items) pairs and their events' signals) mixes as :attr:`repeats`
        says (:mod:`.repeats`). Under :func:`scoring_precision` bf16 on a CPU:
        :meth:`bf16_top_k` (float32 where the history mixes the scores: the mixture needs the
        whole row's normaliser). Mixed and unmasked on a CPU: :func:`repeat_mixed_top_k` (one
        exp pass, as unmixed)."""
        items, scores, _, _ = self._top_k_with(n, rows, vectors, k, None, allowed, seen, history)
        return items, scores

    def _top_k_with(
        self,
        n: int,
        rows: np.ndarray,
        vectors: torch.Tensor,
        k: int,
        columns: np.ndarray | None,
        allowed: np.ndarray | None,
        seen: tuple[np.ndarray, np.ndarray] | None,
        history: RepeatHistory | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """:meth:`top_k`'s (codes, scores) with the [n, 1] log-normaliser and the [n,
        len(columns)] masked logits of the item codes ``columns`` (None without columns), by
        the path :meth:`top_k` names."""
        mixing = history is not None and self.repeats is not None
        on_cpu = self.device.type == "cpu"
        if on_cpu and _PRECISION.get() == "bf16" and n and k and not mixing:
            items, scores, log_z = self.bf16_top_k(n, rows, vectors, k, allowed, seen, with_log_z=True)
            picked = None if columns is None else self.column_logits(n, rows, vectors, columns, allowed, seen)
            return items, scores, log_z, picked
        unmasked = allowed is None and (seen is None or not len(seen[0]))
        if mixing and on_cpu and unmasked and n and k:
            assert history is not None and self.repeats is not None
            logits = self.logits(n, rows, vectors)
            return repeat_mixed_top_k(logits, k, history[0], history[1], self.repeats, columns, history[2])
        logits, mixed_log_z = self.scored_logits(n, rows, vectors, allowed, seen, history)
        picked = None if columns is None else logits[:, torch.from_numpy(columns).to(self.device)].cpu().numpy()
        items, scores, log_z = normalised_top_k(logits, k, with_log_z=True, log_z=mixed_log_z)
        return items, scores, log_z, picked

    def scored_logits(
        self,
        n: int,
        rows: np.ndarray,
        vectors: torch.Tensor,
        allowed: np.ndarray | None,
        seen: tuple[np.ndarray, np.ndarray] | None,
        history: RepeatHistory | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(:meth:`logits` mixed with ``history`` where :attr:`repeats` is set, then
        masked; the [n, 1] log-normaliser of the mixed rows where it follows from the raw one
        without a second exp pass, else None: a mask changes it, so it is summed again)."""
        logits = self.logits(n, rows, vectors)
        log_z = None
        if history is not None and self.repeats is not None:
            log_z = mix_repeats_with_log_z(logits, *history[:2], self.repeats, history[2])
        if allowed is not None or (seen is not None and len(seen[0])):
            log_z = None
        return self.mask(logits, allowed, seen), log_z

    def mask(
        self, logits: torch.Tensor, allowed: np.ndarray | None, seen: tuple[np.ndarray, np.ndarray] | None
    ) -> torch.Tensor:
        """``logits`` with the items not ``allowed`` and the ``seen`` pairs at -inf (in place)."""
        if seen is not None and len(seen[0]):
            r = torch.from_numpy(np.asarray(seen[0], dtype=np.int64)).to(self.device)
            c = torch.from_numpy(np.asarray(seen[1], dtype=np.int64)).to(self.device)
            logits[r, c] = -torch.inf
        if allowed is not None:
            logits.masked_fill_(~torch.from_numpy(np.ascontiguousarray(allowed)).to(self.device), -torch.inf)
        return logits

    # --- bf16 scoring (CPUs with native bf16) ---------------------------------------------------
    def bf16_items(self) -> Bf16Items:
        """The item side in bf16, built on first use."""
        if self.low is None:
            self.low = Bf16Items.of(self.item_matrix, self.bias)
        return self.low

    def bf16_top_k(
        self,
        n: int,
        rows: np.ndarray,
        vectors: torch.Tensor,
        k: int,
        allowed: np.ndarray | None = None,
        seen: tuple[np.ndarray, np.ndarray] | None = None,
        with_log_z: bool = False,
    ):
        """:meth:`top_k` from a bf16 product: the bf16 logits (each within ``margin / 2`` of
        float32's, a bound from the vectors' norms) give the candidates for the top k (the
        threshold less the margin), the candidates are rescored exactly in float32 and
        ranked, so items and numerators are float32's; the normaliser sums the bf16 logits'
        exps with the candidates' terms replaced by their exact ones. ``with_log_z``: the
        [n, 1] log-normaliser comes third."""
        k = min(k, self.n_items)
        logits, users, margin = self.bf16_logits(n, rows, vectors)
        self.mask(logits, allowed, seen)
        cand_rows, codes, approx = top_k_candidates(logits, k, margin)
        exact = self.exact_logits(users, cand_rows, codes)
        top_values, top_codes = rank_candidates(n, k, cand_rows, codes, exact)
        top_max = top_values[:, :1].clone()
        top_max.masked_fill_(torch.isneginf(top_max), 0.0)  # a row with nothing allowed
        z = logits.sub_(top_max).exp_().sum(dim=1).numpy().astype(np.float64)
        shift = top_max.numpy()[cand_rows, 0]
        z += np.bincount(cand_rows, np.exp(exact - shift) - np.exp(approx - shift), minlength=n)
        log_z = torch.from_numpy(np.log(np.maximum(z, np.finfo(np.float32).tiny)).astype(np.float32))[:, None]
        log_z += top_max
        scores = torch.exp(top_values - log_z).numpy()
        items = top_codes.numpy()
        excluded = np.isneginf(top_values.numpy())
        items[excluded], scores[excluded] = -1, 0.0
        return (items, scores, log_z.numpy()) if with_log_z else (items, scores)

    def top_k_and_columns(
        self,
        n: int,
        rows: np.ndarray,
        vectors: torch.Tensor,
        k: int,
        columns: np.ndarray,
        allowed: np.ndarray | None = None,
        seen: tuple[np.ndarray, np.ndarray] | None = None,
        history: RepeatHistory | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`top_k` with the [n, 1] log-normaliser and the [n, len(columns)] masked
        float32 logits of the items ``columns`` (e.g. exploration candidates); ``history`` as
        in :meth:`top_k`."""
        columns = np.asarray(columns, dtype=np.int64)
        items, scores, log_z, picked = self._top_k_with(n, rows, vectors, k, columns, allowed, seen, history)
        assert picked is not None
        return items, scores, log_z, picked

    def column_logits(
        self,
        n: int,
        rows: np.ndarray,
        vectors: torch.Tensor,
        columns: np.ndarray,
        allowed: np.ndarray | None,
        seen: tuple[np.ndarray, np.ndarray] | None,
    ) -> np.ndarray:
        """[n, len(columns)] float32 logits of the items ``columns`` only, masked."""
        c = torch.from_numpy(np.asarray(columns, dtype=np.int64))
        out = self.fallback[c].expand(n, -1).clone()
        if len(rows):
            out[torch.from_numpy(rows)] = torch.addmm(self.bias[c], vectors.float(), self.item_matrix[c].T)
        position = column_positions(columns, self.n_items)
        seen_cols = None
        if seen is not None and len(seen[0]):
            at = position[np.asarray(seen[1], dtype=np.int64)]
            seen_cols = (np.asarray(seen[0])[at >= 0], at[at >= 0])
        return self.mask(out, allowed[:, columns] if allowed is not None else None, seen_cols).numpy()

    def bf16_logits(
        self, n: int, rows: np.ndarray, vectors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """([n, m] float32 logits of a bf16 product, in this thread's block buffer; rows
        without a vector get the fallback, exactly; [n, d + 1] float32 users: vector, 1 (0, 0
        without a vector); [n, 1] margin: twice the bound on each logit's error)."""
        low = self.bf16_items()
        d = self.item_matrix.shape[1]
        users = torch.zeros((n, d + 1))
        users[torch.from_numpy(rows), :d] = vectors.float()
        users[torch.from_numpy(rows), d] = 1.0
        product = getattr(self.buffers, "bf16", None)
        if product is None or len(product) < n:
            product = self.buffers.bf16 = torch.empty((max(n, self.block), self.n_items), dtype=torch.bfloat16)
        out = self.block_buffer(n)
        out.copy_(torch.mm(users.to(torch.bfloat16), low.matrix.T, out=product[:n]))
        margin = 2 * BF16_ERROR * low.norm * torch.linalg.vector_norm(users, dim=1, keepdim=True)
        if len(rows) < n:
            without = torch.ones(n, dtype=torch.bool)
            without[torch.from_numpy(rows)] = False
            out[without] = self.fallback
        return out, users, margin.numpy()

    def exact_logits(self, users: torch.Tensor, rows: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """float32 logits of (row, item code) pairs, rows ascending: vector · item + bias, or
        the fallback for rows without a vector (``users[row, -1] == 0``); one batched
        product over each row's candidates, padded to the longest row."""
        n, d = len(users), self.item_matrix.shape[1]
        place = np.arange(len(rows)) - np.searchsorted(rows, rows)  # place within the row
        padded = np.zeros((n, int(place.max(initial=-1)) + 1), dtype=np.int64)
        padded[rows, place] = codes
        items = self.item_matrix.index_select(0, torch.from_numpy(padded.reshape(-1))).view(n, -1, d)
        dots = torch.bmm(items, users[:, :d, None]).numpy()[rows, place, 0]
        c = torch.from_numpy(codes)
        has_vector = users[:, d].numpy()[rows] > 0
        return np.where(has_vector, dots + self.bias[c].numpy(), self.fallback[c].numpy())


@dataclass(frozen=True)
class Bf16Items:
    """The item side for bf16 scoring: [m, d + 1] item vectors with the bias as the last
    column (a user's last entry is 1), and the largest float32 norm of such a row among the
    items with a finite bias (the error bound of :meth:`LinearScorer.bf16_logits`)."""

    matrix: torch.Tensor
    norm: float

    @classmethod
    def of(cls, item_matrix: torch.Tensor, bias: torch.Tensor) -> Bf16Items:
        rows = torch.cat([item_matrix.float(), bias.float()[:, None]], dim=1)
        finite = torch.isfinite(bias)
        norm = float(torch.linalg.vector_norm(rows[finite], dim=1).max()) if bool(finite.any()) else 0.0
        return cls(rows.to(torch.bfloat16).contiguous(), norm)
