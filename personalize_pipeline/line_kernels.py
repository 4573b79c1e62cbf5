"""Compiled loops (numba) that write batch output lines as bytes (see :mod:`.rendering`).

One pass over a block of lines writes each one straight into a byte buffer: the input's
JSON text, the item ids' JSON texts (encoded once per job), and the scores, each as
``repr(round(float(x), 7))`` spells it, from the digits of ``n = rint(x * 1e7)``:
``0.ddddddd`` without trailing zeros from 1e-4 up, ``d[.dd]e-0X`` below, ``0.0`` and
``1.0`` at the ends (the shortest repr of ``n * 1e-7`` is that decimal itself).
"""

from __future__ import annotations

import numpy as np
from numba import njit

LINE_START = np.frombuffer(b'{"input": ', dtype=np.uint8)
OUTPUT_START = np.frombuffer(b', "output": {"recommendedItems": [', dtype=np.uint8)
SCORES_START = np.frombuffer(b'], "scores": [', dtype=np.uint8)
LINE_END = np.frombuffer(b']}, "error": null}\n', dtype=np.uint8)
SCORE_BYTES = 9  # the longest score text: "0.1234567"
ZERO, DOT, COMMA, SPACE = ord("0"), ord("."), ord(","), ord(" ")


@njit(nogil=True, cache=True)
def _put(out: np.ndarray, pos: int, text: np.ndarray, lo: int, hi: int) -> int:
    for j in range(lo, hi):
        out[pos] = text[j]
        pos += 1
    return pos


@njit(nogil=True, cache=True)
def _put_score(out: np.ndarray, pos: int, value: float) -> int:
    """``repr(round(value, 7))`` of a value in [0, 1] at ``pos``; returns the end."""
    n = np.int64(np.rint(np.float64(value) * 1e7))
    if n <= 0 or n >= 10_000_000:
        out[pos], out[pos + 1], out[pos + 2] = ZERO + (n >= 10_000_000), DOT, ZERO
        return pos + 3
    digits = np.empty(7, np.uint8)  # n as 7 decimals
    rest = n
    for i in range(6, -1, -1):
        digits[i] = rest % 10
        rest //= 10
    last = 6
    while digits[last] == 0:
        last -= 1
    if n >= 1000:  # 0.ddddddd, trailing zeros dropped
        out[pos], out[pos + 1] = ZERO, DOT
        pos += 2
        for i in range(last + 1):
            out[pos] = ZERO + digits[i]
            pos += 1
        return pos
    width = 3 if n >= 100 else (2 if n >= 10 else 1)  # d[.dd]e-0X, X = 8 - width
    lead = 7 - width
    out[pos] = ZERO + digits[lead]
    pos += 1
    if last > lead:
        out[pos] = DOT
        pos += 1
        for i in range(lead + 1, last + 1):
            out[pos] = ZERO + digits[i]
            pos += 1
    for c in (ord("e"), ord("-"), ZERO, ZERO + 8 - width):
        out[pos] = c
        pos += 1
    return pos


@njit(nogil=True, cache=True)
def render_lines(
    inputs: np.ndarray,
    input_ends: np.ndarray,
    items: np.ndarray,
    scores: np.ndarray,
    names: np.ndarray,
    name_ends: np.ndarray,
) -> np.ndarray:
    """The output lines of a block: line i has the input text ``inputs[input_ends[i - 1]:
    input_ends[i]]`` (UTF-8; ``input_ends[-1]`` = 0), the items ``items[i]`` (codes, -1 pads
    the end) named by ``names[name_ends[c - 1]:name_ends[c]]`` and their ``scores[i]``."""
    n, k = items.shape
    size = 0
    for i in range(n):
        size += LINE_START.size + OUTPUT_START.size + SCORES_START.size + LINE_END.size
        for a in range(k):
            c = items[i, a]
            if c >= 0:
                size += name_ends[c] - (name_ends[c - 1] if c else 0) + SCORE_BYTES + 4
    out = np.empty(size + inputs.size, np.uint8)
    pos = 0
    for i in range(n):
        pos = _put(out, pos, LINE_START, 0, LINE_START.size)
        pos = _put(out, pos, inputs, input_ends[i - 1] if i else 0, input_ends[i])
        pos = _put(out, pos, OUTPUT_START, 0, OUTPUT_START.size)
        for a in range(k):
            c = items[i, a]
            if c >= 0:
                if a:
                    out[pos], out[pos + 1] = COMMA, SPACE
                    pos += 2
                pos = _put(out, pos, names, name_ends[c - 1] if c else 0, name_ends[c])
        pos = _put(out, pos, SCORES_START, 0, SCORES_START.size)
        for a in range(k):
            if items[i, a] >= 0:
                if a:
                    out[pos], out[pos + 1] = COMMA, SPACE
                    pos += 2
                pos = _put_score(out, pos, scores[i, a])
        pos = _put(out, pos, LINE_END, 0, LINE_END.size)
    return out[:pos]


@njit(nogil=True, cache=True)
def render_scores(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(text bytes, end offsets) of each score of ``values`` (in [0, 1]) as lines render it."""
    out = np.empty(values.size * SCORE_BYTES, np.uint8)
    ends = np.empty(values.size, np.int64)
    pos = 0
    for i in range(values.size):
        pos = _put_score(out, pos, values[i])
        ends[i] = pos
    return out[:pos], ends
