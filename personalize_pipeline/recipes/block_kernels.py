"""Compiled loops (numba) for a CPU block of logits: the exact top k and the log-normaliser.

After the product "user vectors × item matrix" the block is read by two loops of each row,
compiled once (and cached on disk) with numba, holding the GIL for neither:

- :func:`block_top_k`: the k largest logits of a row, ties to the lower item code, -inf
  never. Any value at or below the k-th largest maximum of groups of item codes is a floor
  under the row's k-th value (k groups hold an item at least that high), so only the groups
  whose maximum reaches it (about k of m / group) are scanned and the few items at or above
  it (about k + 4 at 10k items) go through an insertion sort. The row's group maxima (LLVM's
  vectorised ``maxnum``), the floor (halvings, each a vectorised count) and the scan run
  while the row is in cache.
- :func:`block_log_sum_exp`: log(sum(exp(row))), shifted by the row's maximum, with exp
  written out as Cody–Waite range reduction and Cephes' degree-6 polynomial (relative error
  about 1e-7, as float32's own exp) and 2**n as a bit cast, in one loop LLVM vectorises,
  summed in float32 per 512 values and in float64 across. numpy's exp of the whole block,
  then a sum, cost about three times as much here (bench/README.md, sessions 19 and 22).

- :func:`take_history` and :func:`block_repeat_mixed_top_k`: the same with the user's
  history mixed in as :mod:`.repeats` describes (the history's logits read out and set to
  -inf, the others' top k and normaliser as above, then the mixed history items inserted
  where they reach the top k).

They take C-contiguous float32 blocks and write into arrays the caller gives; :mod:`.scoring`
calls them (:func:`.scoring.threshold_top_k`, :func:`.scoring.log_sum_exp`,
:func:`.scoring.repeat_mixed_top_k`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

LOG2E = np.float32(1.4426950408889634)
LN2_HI = np.float32(0.693359375)  # ln 2 in two parts (Cody–Waite): exact products with n
LN2_LO = np.float32(-2.12194440e-4)
EXP_FLOOR = np.float32(-87.0)  # exp of anything lower (-inf included) adds 0 (float32 exp: < 1.7e-38)
CHUNK = 512  # values per float32 partial sum
LOWEST = np.float32(-3.4028235e38)  # the top-k's floor is never -inf: excluded items never count
TINY = float(np.finfo(np.float64).tiny)
# reassociation lets LLVM vectorise the polynomial and the sums; no "ninf": -inf is data here
FAST = {"nnan", "nsz", "arcp", "contract", "reassoc", "afn"}


def _bit_cast(typingctx: Any, bits: Any) -> tuple[Any, Any]:
    """The float32 whose bits are the int32 ``bits`` (a bit cast, which LLVM vectorises)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


def _maxnum(typingctx: Any, a: Any, b: Any) -> tuple[Any, Any]:
    """max of two float32s as LLVM's ``maxnum``, whose reductions LLVM vectorises (numba's
    ``max`` is a compare and a branch, which it does not: 3.4 against 0.7 us per 10k)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        f32 = ir.FloatType()
        maxnum = builder.module.declare_intrinsic("llvm.maxnum", [f32], ir.FunctionType(f32, [f32, f32]))
        return builder.call(maxnum, args, fastmath=("nnan", "nsz"))

    return types.float32(types.float32, types.float32), codegen


_as_float: Any = intrinsic(_bit_cast)
_fmax: Any = intrinsic(_maxnum)


@njit(nogil=True, cache=True, fastmath=FAST)
def _exp_sum(row: np.ndarray, shift: np.float32) -> float:
    """sum(exp(row - shift)) for ``shift`` >= max(row), in one vectorised loop per CHUNK."""
    m = row.shape[0]
    total = 0.0
    for lo in range(0, m, CHUNK):
        chunk = row[lo : min(lo + CHUNK, m)]
        part = np.float32(0.0)
        for j in range(chunk.shape[0]):
            x = chunk[j] - shift
            kept = np.float32(1.0) if x > EXP_FLOOR else np.float32(0.0)  # exp(< -87) adds 0
            x = max(x, EXP_FLOOR)
            n = np.floor(x * LOG2E + np.float32(0.5))
            r = x - n * LN2_HI - n * LN2_LO
            p = np.float32(1.9875691500e-4)
            p = p * r + np.float32(1.3981999507e-3)
            p = p * r + np.float32(8.3334519073e-3)
            p = p * r + np.float32(4.1665795894e-2)
            p = p * r + np.float32(1.6666665459e-1)
            p = p * r + np.float32(5.0000001201e-1)
            power = _as_float((np.int32(n) + np.int32(127)) << np.int32(23))  # 2**n, n >= -126
            part += (p * r * r + r + np.float32(1.0)) * power * kept
        total += float(part)
    return total


@njit(nogil=True, cache=True)
def block_log_sum_exp(values: np.ndarray, row_max: np.ndarray, out: np.ndarray) -> None:
    """``out[i]`` = log(sum(exp(values[i]))) given a shift at or above each row's maximum and
    within 87 of it (-inf where nothing is allowed, or a row of -inf)."""
    for i in range(values.shape[0]):
        shift = row_max[i]
        if shift == -np.inf:
            out[i] = -np.inf
        else:
            total = _exp_sum(values[i], shift)
            out[i] = shift + np.log(total) if total > 0.0 else -np.inf


@njit(nogil=True, cache=True, fastmath=FAST)
def _group_maxima(row: np.ndarray, group: int, out: np.ndarray) -> None:
    """``out[g]`` = max(row[g * group:(g + 1) * group]) for each of ``out``'s groups."""
    for g in range(out.shape[0]):
        part = row[g * group : (g + 1) * group]  # a slice: no negative-index check in the loop
        top = np.float32(-np.inf)
        for j in range(part.shape[0]):
            top = _fmax(top, part[j])
        out[g] = top


@njit(nogil=True, cache=True, fastmath=FAST)
def _count_at_least(values: np.ndarray, floor: np.float32) -> int:
    count = 0
    for j in range(values.shape[0]):
        count += values[j] >= floor
    return count


@njit(nogil=True, cache=True, fastmath=FAST)
def _floor_of_k(group_max: np.ndarray, k: int) -> np.float32:
    """A floor (never -inf) at or below the k-th largest of ``group_max``, with few more than
    k of them at or above it: 12 halvings of [least finite, largest], each a vectorised count
    (an exact selection branches on every value: 1.4 against 0.5 us for 100 groups)."""
    lo, hi = np.float32(np.inf), np.float32(-np.inf)
    for g in range(group_max.shape[0]):
        x = group_max[g]
        hi = max(hi, x)
        if x > LOWEST:
            lo = min(lo, x)
    if not hi > LOWEST or _count_at_least(group_max, lo) < k:
        return LOWEST  # fewer than k groups hold an allowed item: every allowed item counts
    for _ in range(12):
        middle = lo * np.float32(0.5) + hi * np.float32(0.5)
        if _count_at_least(group_max, middle) >= k:
            lo = middle
        else:
            hi = middle
    return lo


@njit(nogil=True, cache=True, fastmath=FAST)
def _append_at_least(
    part: np.ndarray, offset: int, floor: np.float32, values: np.ndarray, codes: np.ndarray, found: int
) -> int:
    """Append the items of ``part`` (codes from ``offset``) at or above ``floor`` after the
    first ``found`` of ``values``/``codes``; returns the new count."""
    for j in range(part.shape[0]):
        if part[j] >= floor:
            values[found], codes[found] = part[j], offset + j
            found += 1
    return found


@njit(nogil=True, cache=True, fastmath=FAST)
def _candidates(
    row: np.ndarray, group_max: np.ndarray, group: int, floor: np.float32, values: np.ndarray, codes: np.ndarray
) -> int:
    """Items of ``row`` at or above ``floor`` (> -inf) into ``values``/``codes``, codes
    ascending: the groups whose maximum reaches it, then the codes after the last group. A
    group with one such item (most) is counted in a vectorised pass and its maximum found."""
    found = 0
    for g in range(group_max.shape[0]):
        top = group_max[g]
        if top < floor:
            continue
        lo = g * group
        part = row[lo : lo + group]
        if _count_at_least(part, floor) == 1:
            j = 0
            while part[j] != top:
                j += 1
            values[found], codes[found] = top, lo + j
            found += 1
        else:
            found = _append_at_least(part, lo, floor, values, codes, found)
    lo = group_max.shape[0] * group
    return _append_at_least(row[lo:], lo, floor, values, codes, found)


class _Scratch(NamedTuple):
    """Per-call work arrays of the row loops."""

    group_max: np.ndarray  # [m // group] float32: a row's group maxima
    found_values: np.ndarray  # [m] float32: a row's candidates
    found_codes: np.ndarray  # [m] int64


@njit(nogil=True, cache=True)
def _scratch(m: int, group: int) -> _Scratch:
    return _Scratch(
        np.empty(m // group, np.float32),
        np.empty(m, np.float32),
        np.empty(m, np.int64),
    )


@njit(nogil=True, cache=True)
def _row_top_k(
    row: np.ndarray, group: int, k: int, work: _Scratch, top_values: np.ndarray, top_codes: np.ndarray
) -> None:
    """[k] best values and codes of ``row`` (k <= m // group), best first, ties to the lower
    code; -inf / -1 pad."""
    _group_maxima(row, group, work.group_max)
    floor = _floor_of_k(work.group_max, k)
    values, codes = work.found_values, work.found_codes
    found = _candidates(row, work.group_max, group, floor, values, codes)
    for a in range(1, found):  # insertion sort, stable: equal values keep their code order
        v, c, b = values[a], codes[a], a - 1
        while b >= 0 and values[b] < v:
            values[b + 1], codes[b + 1] = values[b], codes[b]
            b -= 1
        values[b + 1], codes[b + 1] = v, c
    for a in range(k):
        top_values[a] = values[a] if a < found else -np.inf
        top_codes[a] = codes[a] if a < found else -1


@njit(nogil=True, cache=True)
def block_top_k(values: np.ndarray, group: int, k: int, top_values: np.ndarray, top_codes: np.ndarray) -> None:
    """[n, k] best values and codes of each row of ``values`` ([n, m] float32, k <= m // group),
    best first, ties to the lower code; -inf / -1 pad."""
    work = _scratch(values.shape[1], group)
    for i in range(values.shape[0]):
        _row_top_k(values[i], group, k, work, top_values[i], top_codes[i])


@njit(nogil=True, cache=True)
def take_history(
    values: np.ndarray, rows: np.ndarray, items: np.ndarray, weights: np.ndarray, revive: np.ndarray, seen: np.ndarray
) -> int:
    """Read out and set to -inf the logits of the distinct history pairs (``rows``
    ascending, ``items``); ``seen`` ([len(rows)] float32) gets their values; ``rows``,
    ``items`` and ``weights`` are compacted to the pairs kept: those with a value, and those
    at -inf that ``revive`` brings back (:func:`.repeats.revived`). Returns how many were kept."""
    kept = 0
    for p in range(rows.shape[0]):
        r, c = rows[p], items[p]
        v = values[r, c]
        if v != -np.inf or revive[p]:
            values[r, c] = -np.inf
            rows[kept], items[kept], weights[kept], seen[kept] = r, c, weights[p], v
            kept += 1
    return kept


@njit(nogil=True, cache=True)
def _insert(top_values: np.ndarray, top_codes: np.ndarray, value: np.float32, code: np.int64) -> None:
    """Put (value, code) into the [k] list (value descending, then code ascending) if it
    belongs there; the last entry falls out."""
    k = top_values.shape[0]
    if value < top_values[k - 1] or (value == top_values[k - 1] and code > top_codes[k - 1]):
        return
    b = k - 1
    while b > 0 and (top_values[b - 1] < value or (top_values[b - 1] == value and top_codes[b - 1] > code)):
        top_values[b], top_codes[b] = top_values[b - 1], top_codes[b - 1]
        b -= 1
    top_values[b], top_codes[b] = value, code


@njit(nogil=True, cache=True)
def block_repeat_mixed_top_k(
    values: np.ndarray,
    group: int,
    k: int,
    starts: np.ndarray,
    codes: np.ndarray,
    seen: np.ndarray,
    weights: np.ndarray,
    shares: np.ndarray,
    recency: float,
    p_range: tuple[float, float],
    top_values: np.ndarray,
    top_codes: np.ndarray,
    log_z: np.ndarray,
    columns: np.ndarray,
    picked: np.ndarray,
) -> None:
    """:func:`block_top_k` of the items outside each row's history (the history at -inf in
    ``values``: :func:`take_history`; row i's pairs are ``codes``/``seen``/``weights``
    [starts[i]:starts[i + 1]]) mixed with the history as :mod:`.repeats` mixes it
    (``shares``: each row's repeat share; ``recency``: the recency weight): ``log_z`` gets
    the mixed log-normaliser, ``seen`` the mixed logits, and the history items join a row's
    top k where they reach it. ``picked`` ([n, len(columns)]) gets each row's values at the item
    codes ``columns`` (the history's at -inf), read while the row is in cache."""
    work = _scratch(values.shape[1], group)
    for i in range(values.shape[0]):
        share = shares[i]
        row = values[i]
        for j in range(columns.shape[0]):
            picked[i, j] = row[columns[j]]
        _row_top_k(row, group, k, work, top_values[i], top_codes[i])
        lo, hi = starts[i], starts[i + 1]
        shift = top_values[i, 0]
        for p in range(lo, hi):
            shift = max(shift, seen[p])
        if shift == -np.inf:
            shift = np.float32(0.0)  # nothing allowed
        z_other = _exp_sum(row, shift)
        z_seen, w_sum = 0.0, 0.0
        for p in range(lo, hi):
            z_seen += np.exp(np.float64(seen[p]) - shift)
            w_sum += weights[p]
        total = max(z_other + z_seen, TINY)
        p_seen = min(max(z_seen / total, p_range[0]), p_range[1])
        lam = recency if z_seen > 0.0 else 1.0  # nothing the model can score: recency alone
        base = np.log(total) + np.log1p(-p_seen) - np.log1p(-share)  # the explore items keep their logits
        z_mixed = 0.0
        for p in range(lo, hi):
            within = lam * weights[p] / w_sum + (1.0 - lam) * np.exp(np.float64(seen[p]) - shift) / total / p_seen
            seen[p] = np.float32(np.log(share * within) + base + shift)
            z_mixed += np.exp(np.float64(seen[p]) - shift)
            _insert(top_values[i], top_codes[i], seen[p], codes[p])
        log_z[i] = shift + np.log(max(z_other + z_mixed, TINY))


@njit(nogil=True, cache=True)
def interpolate_log_quantiles(
    log_odds: np.ndarray, table: np.ndarray, lowest: float, scale: float, out: np.ndarray
) -> None:
    """``out[i, j]``: item j's log-quantile at ``log_odds[i, j]`` (logit of a uniform draw),
    linear between the points of its row of ``table`` ([items, grid], uniform in the logit
    from ``lowest`` on, ``scale`` points per unit), the end points beyond the grid."""
    grid = table.shape[1]
    top = np.float32(grid - 1.001)
    for i in range(log_odds.shape[0]):
        for j in range(log_odds.shape[1]):
            position = min(max((log_odds[i, j] - lowest) * scale, np.float32(0.0)), top)
            below = np.int64(position)
            fraction = position - np.float32(below)
            low = table[j, below]
            out[i, j] = low + fraction * (table[j, below + 1] - low)
