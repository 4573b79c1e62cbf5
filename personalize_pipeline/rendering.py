"""Batch inference output lines, rendered for a whole block of requests at once.

A line is ``{"input": ..., "output": {"recommendedItems": [...], "scores": [...]}, "error": null}``
exactly as ``json.dumps`` (default separators, ``ensure_ascii=False``) and ``repr`` of the
score rounded to 7 decimals would write it, but built as one uint8 matrix per block: each
field is laid out at a fixed width with NUL padding (JSON text never holds a raw NUL: it is
escaped), and the NULs are dropped in one pass. No Python work per item or score.

Scores: ``np.round(x, 7)`` is ``rint(x * 1e7) / 1e7``, and the shortest ``repr`` of that
double is the decimal ``n * 1e-7`` itself (n = the rounded integer), so the text follows from
the digits of ``n``: ``0.dddddd`` (trailing zeros dropped) from 1e-4 up, ``d.dde-0X`` below,
``0.0`` and ``1.0`` at the ends, as ``repr`` writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from json.encoder import encode_basestring  # what json.dumps(str, ensure_ascii=False) uses
from typing import Any

import numpy as np

LINE_START = b'{"input": '
OUTPUT_START = b', "output": {"recommendedItems": ['
SCORES_START = b'], "scores": ['
LINE_END = b']}, "error": null}\n'
SCORE_WIDTH = 9  # "0.1234567"; scientific forms are at most 8 ("1.23e-05")
_POW10_32 = 10 ** np.arange(6, -1, -1, dtype=np.int32)


def json_text(value: str) -> str:
    """``json.dumps(value, ensure_ascii=False)`` of a string."""
    return encode_basestring(value)


def input_json(obj: Any) -> str:
    """``json.dumps(obj, ensure_ascii=False)``, with a short cut for the usual one-key object."""
    if type(obj) is dict and len(obj) == 1:
        ((key, value),) = obj.items()
        if type(value) is str:
            return "{" + encode_basestring(key) + ": " + encode_basestring(value) + "}"
    import json

    return json.dumps(obj, ensure_ascii=False)


def text_table(texts: Sequence[str]) -> np.ndarray:
    """UTF-8 of each text as a NUL-padded [len, width] uint8 matrix."""
    fixed = np.array([t.encode("utf-8") for t in texts], dtype=bytes)
    width = max(fixed.dtype.itemsize, 1)
    return fixed.view(np.uint8).reshape(len(texts), width) if len(texts) else np.zeros((0, width), np.uint8)


def score_text(values: np.ndarray) -> np.ndarray:
    """[..., SCORE_WIDTH] uint8: ``repr(round(float(v), 7))`` of each value in [0, 1], NUL-padded."""
    shape = np.shape(values)
    n = np.rint(np.asarray(values, dtype=np.float64).reshape(-1) * 1e7).astype(np.int64)
    digits = ((np.minimum(n, 9_999_999).astype(np.int32)[:, None] // _POW10_32) % 10).astype(np.uint8)  # 7 decimals
    last = 6 - np.argmax(digits[:, ::-1] != 0, axis=1)  # last non-zero decimal (6 when n == 0)
    out = np.zeros((len(n), SCORE_WIDTH), dtype=np.uint8)
    # positional: 0.ddddddd without trailing zeros (n >= 1000, i.e. values >= 1e-4)
    pos = n >= 1000
    out[pos, 0], out[pos, 1] = ord("0"), ord(".")
    out[:, 2:] = np.where(pos[:, None] & (np.arange(7) <= last[:, None]), digits + np.uint8(48), 0)
    sci = np.flatnonzero((n >= 1) & (n < 1000))
    if len(sci):
        out[sci] = scientific_text(n[sci], digits[sci], last[sci])
    out[n == 0] = np.frombuffer(b"0.0".ljust(SCORE_WIDTH, b"\0"), dtype=np.uint8)
    out[n >= 10_000_000] = np.frombuffer(b"1.0".ljust(SCORE_WIDTH, b"\0"), dtype=np.uint8)
    return out.reshape(shape + (SCORE_WIDTH,))


def scientific_text(n: np.ndarray, digits: np.ndarray, last: np.ndarray) -> np.ndarray:
    """[len(n), SCORE_WIDTH] uint8 of 1 <= n < 1000 (n * 1e-7): d[.dd]e-0X, with p digits in n
    and exponent p - 8; ``digits``/``last`` as in :func:`score_text`."""
    p = np.where(n >= 100, 3, np.where(n >= 10, 2, 1))
    lead = 7 - p
    rest = last - lead  # decimals after the leading digit (0 to 2)

    def take(i: int) -> np.ndarray:  # digit i of n, counting from its leading digit (0)
        return np.take_along_axis(digits, np.minimum(lead + i, 6)[:, None], axis=1)[:, 0].astype(np.int64)

    chars = [
        take(0) + 48,
        np.where(rest > 0, ord("."), 0),
        np.where(rest >= 1, take(1) + 48, 0),
        np.where(rest >= 2, take(2) + 48, 0),
        np.full(n.shape, ord("e")),
        np.full(n.shape, ord("-")),
        np.full(n.shape, ord("0")),
        48 + 8 - p,
        np.zeros(n.shape, dtype=np.int64),
    ]
    return np.stack(chars, axis=-1).astype(np.uint8)


def renderable(items: np.ndarray, scores: np.ndarray) -> bool:
    """Whether :func:`render_top_lines` renders these exactly (finite scores in [0, 1])."""
    valid = items >= 0
    s = np.asarray(scores, dtype=np.float64)[valid]
    return bool(np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all())


def render_top_lines(inputs: Sequence[str], items: np.ndarray, scores: np.ndarray, item_table: np.ndarray) -> bytes:
    """Output lines (each ending in a newline) for ``inputs[i]`` with top-k ``items[i]``
    (codes; -1 pads the end) and their ``scores[i]``; ``item_table`` = :func:`text_table`
    of the JSON text of every item id."""
    n, k = items.shape
    if n == 0:
        return b""
    valid = items >= 0
    names = item_table[np.where(valid, items, 0)]  # [n, k, W]
    names[~valid] = 0
    sep = np.zeros((n, k, 2), dtype=np.uint8)
    sep[:, 1:] = np.frombuffer(b", ", dtype=np.uint8)
    sep[~valid] = 0
    values = score_text(np.where(valid, scores, 0.0))
    values[~valid] = 0

    def const(text: bytes) -> np.ndarray:
        return np.broadcast_to(np.frombuffer(text, dtype=np.uint8), (n, len(text)))

    parts = [
        const(LINE_START),
        text_table(inputs),
        const(OUTPUT_START),
        np.concatenate([sep, names], axis=2).reshape(n, -1),
        const(SCORES_START),
        np.concatenate([sep, values], axis=2).reshape(n, -1),
        const(LINE_END),
    ]
    matrix = np.concatenate(parts, axis=1)
    return matrix[matrix != 0].tobytes()


def render_top_line(input_text: str, names: list[str], values: list[float]) -> str:
    """One line the per-element way (the reference :func:`render_top_lines` must match)."""
    scores = ", ".join(repr(v) for v in np.round(np.asarray(values, dtype=np.float64), 7).tolist())
    return (
        '{"input": '
        + input_text
        + ', "output": {"recommendedItems": ['
        + ", ".join(names)
        + '], "scores": ['
        + scores
        + ']}, "error": null}'
    )
