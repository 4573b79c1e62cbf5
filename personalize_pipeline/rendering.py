"""Batch inference output lines, rendered for a whole block of requests at once.

A line is ``{"input": ..., "output": {"recommendedItems": [...], "scores": [...]}, "error": null}``
exactly as ``json.dumps`` (default separators, ``ensure_ascii=False``) and ``repr`` of the
score rounded to 7 decimals would write it, but written for a whole block in one compiled
pass (:mod:`.line_kernels`) from the inputs' JSON texts, the item ids' JSON texts (encoded
once per job: :func:`text_table`) and the float scores. No Python work per item or score.
"""

from __future__ import annotations

from collections.abc import Sequence
from json.encoder import encode_basestring  # what json.dumps(str, ensure_ascii=False) uses
from typing import Any, NamedTuple

import numpy as np


class TextTable(NamedTuple):
    """Texts as one UTF-8 byte array: text i is ``data[ends[i - 1]:ends[i]]`` (0 for i = 0)."""

    data: np.ndarray  # uint8
    ends: np.ndarray  # int64


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


def text_table(texts: Sequence[str]) -> TextTable:
    """UTF-8 of each text, one after the other (texts hold no newline: JSON escapes it)."""
    data = np.frombuffer("\n".join(texts).encode("utf-8"), dtype=np.uint8)
    breaks = np.flatnonzero(data == ord("\n"))
    ends = np.append(breaks, len(data)) if len(texts) else np.zeros(0, np.int64)
    keep = np.ones(len(data), dtype=bool)
    keep[breaks] = False
    return TextTable(data[keep], (ends - np.arange(len(ends))).astype(np.int64))


def score_text(values: np.ndarray) -> list[str]:
    """``repr(round(float(v), 7))`` of each value in [0, 1], as the lines write it."""
    from .line_kernels import render_scores

    data, ends = render_scores(np.ascontiguousarray(values, dtype=np.float64).reshape(-1))
    text = data.tobytes().decode("ascii")
    return [text[lo:hi] for lo, hi in zip(np.r_[0, ends[:-1]].tolist(), ends.tolist(), strict=True)]


def renderable(items: np.ndarray, scores: np.ndarray) -> bool:
    """Whether :func:`render_top_lines` renders these exactly (finite scores in [0, 1])."""
    valid = items >= 0
    s = np.asarray(scores, dtype=np.float64)[valid]
    return bool(np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all())


def render_top_lines(inputs: Sequence[str], items: np.ndarray, scores: np.ndarray, item_table: TextTable) -> bytes:
    """Output lines (each ending in a newline) for ``inputs[i]`` with top-k ``items[i]``
    (codes; -1 pads the end) and their ``scores[i]``; ``item_table`` = :func:`text_table`
    of the JSON text of every item id."""
    from .line_kernels import render_lines

    if len(inputs) == 0:
        return b""
    texts = text_table(inputs)
    return render_lines(
        texts.data,
        texts.ends,
        np.ascontiguousarray(items, dtype=np.int64),
        np.ascontiguousarray(scores, dtype=np.float64),
        item_table.data,
        item_table.ends,
    ).tobytes()


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
