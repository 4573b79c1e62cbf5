"""What filters are evaluated against: :class:`FilterContext` (catalogue, metadata, events by
code) and its derived, cached data — events grouped by user and metadata columns prepared for
matching (canonical strings split on ``|``, numbers)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from .syntax import Condition, canonical_number, scalar_text

_T = TypeVar("_T")


# --- context -------------------------------------------------------------------------------------
@dataclass
class FilterContext:
    """What filters are evaluated against: catalogue, metadata and interactions, by code.

    Treat it as immutable once built: derived data (vectors per condition, sorted events)
    is cached on it, so build it once per job and pass it to every ``mask`` call.
    """

    item_ids: np.ndarray  # code -> ITEM_ID (str), length n_items
    items: pd.DataFrame | None  # raw item metadata, one row per item code (None: no Items dataset)
    user_ids: np.ndarray  # code -> USER_ID
    users: pd.DataFrame | None  # raw user metadata, one row per user code (None: no Users dataset)
    interaction_users: np.ndarray  # int user code per event
    interaction_items: np.ndarray  # int item code per event
    interaction_event_types: np.ndarray | None  # str per event (None if no EVENT_TYPE)
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.item_ids = np.asarray(self.item_ids)
        self.user_ids = np.asarray(self.user_ids)
        self.interaction_users = np.asarray(self.interaction_users, dtype=np.int64).ravel()
        self.interaction_items = np.asarray(self.interaction_items, dtype=np.int64).ravel()
        n_events = len(self.interaction_users)
        if len(self.interaction_items) != n_events:
            raise ValueError(
                f"FilterContext: {n_events} interaction users but {len(self.interaction_items)} interaction items"
            )
        if self.interaction_event_types is not None and len(self.interaction_event_types) != n_events:
            raise ValueError(
                f"FilterContext: {n_events} interactions but {len(self.interaction_event_types)} event types"
            )
        if n_events and (
            self.interaction_users.max() >= len(self.user_ids) or self.interaction_items.max() >= len(self.item_ids)
        ):
            raise ValueError("FilterContext: interaction user/item codes out of range")
        for name, frame, n in (("items", self.items, len(self.item_ids)), ("users", self.users, len(self.user_ids))):
            if frame is not None and len(frame) != n:
                raise ValueError(f"FilterContext: {name} metadata has {len(frame)} rows, expected {n}")

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @classmethod
    def from_history(
        cls,
        item_ids: np.ndarray,
        items: pd.DataFrame | None,
        user_ids: np.ndarray,
        users: pd.DataFrame | None,
        indptr: np.ndarray,
        history_items: np.ndarray,
        event_types: np.ndarray | None = None,
    ) -> FilterContext:
        """From per-user CSR histories (``history_items[indptr[u]:indptr[u+1]]``, as a
        solution version stores them) and optional event types aligned with ``history_items``."""
        indptr = np.asarray(indptr, dtype=np.int64)
        users_per_event = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
        return cls(item_ids, items, user_ids, users, users_per_event, np.asarray(history_items), event_types)

    # cached derived data -------------------------------------------------------------------------
    def _cached(self, key: tuple[Any, ...], build: Callable[[], _T]) -> _T:
        try:
            return self._cache[key]
        except KeyError:
            value = self._cache[key] = build()
            return value

    def _events(self) -> _Events:
        return self._cached(("events",), lambda: _Events.build(self))


@dataclass
class _Events:
    """Events sorted by user: user u's events are ``[indptr[u], indptr[u+1])``."""

    indptr: np.ndarray
    items: np.ndarray
    type_codes: np.ndarray | None  # per sorted event, -1 = missing
    type_names: np.ndarray | None  # lower-cased distinct event types

    @staticmethod
    def build(ctx: FilterContext) -> _Events:
        users = ctx.interaction_users
        keep = users >= 0
        n_keep = int(keep.sum())
        if n_keep == len(users) and (len(users) < 2 or bool(np.all(users[1:] >= users[:-1]))):
            order = None  # already grouped by user (e.g. from_history)
        else:
            order = np.argsort(np.where(keep, users, len(ctx.user_ids)))[:n_keep]
        counts = np.bincount(users[keep], minlength=len(ctx.user_ids))
        indptr = np.zeros(len(ctx.user_ids) + 2, dtype=np.int64)  # + 1 spare entry for csr_ranges
        np.cumsum(counts, out=indptr[1:-1])
        indptr[-1] = indptr[-2]
        type_codes = type_names = None
        types = ctx.interaction_event_types
        if types is not None:
            if isinstance(types, pd.Categorical) or isinstance(getattr(types, "dtype", None), pd.CategoricalDtype):
                cat = pd.Categorical(types)
                codes, uniques = cat.codes, cat.categories
            else:
                codes, uniques = pd.factorize(np.asarray(types, dtype=object))  # before reordering: faster
            type_codes = np.asarray(codes, dtype=np.int64)
            type_codes = type_codes if order is None else type_codes[order]
            type_names = np.array([str(u).lower() for u in uniques], dtype=object)
        items = ctx.interaction_items if order is None else ctx.interaction_items[order]
        return _Events(indptr, items, type_codes, type_names)


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, str):
        return v == ""
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


# --- columns -------------------------------------------------------------------------------------
class Column:
    """One metadata field, prepared for matching: canonical strings split on "|", numbers."""

    def __init__(self, name: str, series: pd.Series):
        self.name = name  # Dataset.FIELD
        s = series.reset_index(drop=True)
        self.n = n = len(s)
        self.typed_numeric = False  # a numeric (or datetime) column, not numbers in strings
        self._numbers: np.ndarray | None = None
        if pd.api.types.is_bool_dtype(s.dtype):
            flags = s.to_numpy(dtype=object, na_value=None)
            strings = np.array([None if v is None else ("True" if v else "False") for v in flags], dtype=object)
        elif pd.api.types.is_datetime64_any_dtype(s.dtype):
            ts = pd.to_datetime(s, utc=True)
            numbers = ((ts - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(
                dtype=np.float64, na_value=np.nan
            )
            strings = np.array([None if math.isnan(x) else canonical_number(x) for x in numbers], dtype=object)
            self.typed_numeric, self._numbers = True, numbers
        elif pd.api.types.is_numeric_dtype(s.dtype):
            numbers = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            integral = np.isfinite(numbers) & (np.floor(numbers) == numbers) & (np.abs(numbers) < 1e16)
            strings = np.empty(n, dtype=object)
            strings[integral] = [str(v) for v in numbers[integral].astype(np.int64).tolist()]
            rest = ~integral & ~np.isnan(numbers)
            strings[rest] = [repr(float(x)) for x in numbers[rest]]
            self.typed_numeric, self._numbers = True, numbers
        else:
            values = s.to_numpy(dtype=object)
            is_str = np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=n)
            strings = values.copy()
            for k in np.flatnonzero(~is_str):
                strings[k] = None if _is_missing(values[k]) else scalar_text(values[k])
            if n:
                strings[strings == ""] = None
        self.strings = strings
        self.missing = pd.isna(pd.Series(strings, dtype=object)).to_numpy()
        lists = pc.split_pattern(pa.array(strings, type=pa.string(), from_pandas=True), "|")
        flat = lists.flatten()
        parent = np.asarray(pc.list_parent_indices(lists).to_numpy(zero_copy_only=False), dtype=np.int64)
        nonempty = np.asarray(pc.not_equal(flat, "").to_numpy(zero_copy_only=False), dtype=bool)
        if not nonempty.all():
            flat, parent = flat.filter(pa.array(nonempty)), parent[nonempty]
        self.flat = flat  # every (row, value) pair's value, rows ascending
        self.parent = parent  # the row of each flat value
        self._numbers_done = self._numbers is not None
        self._bad: str | None = None
        self._rows: tuple[np.ndarray, np.ndarray] | None = None  # (indptr by row, flat values)
        self._atoms: tuple[np.ndarray, pd.Index] | None = None

    @property
    def numbers(self) -> np.ndarray | None:
        """Float per row (NaN = missing), or None when some value is not a number."""
        if not self._numbers_done:
            self._numbers_done = True
            present = ~self.missing
            values = pd.Series(self.strings[present], dtype=object).str.strip()
            converted = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            failed = np.isnan(converted)
            if failed.any():
                self._bad = str(self.strings[present][np.argmax(failed)])
            else:
                self._numbers = np.full(self.n, np.nan)
                self._numbers[present] = converted
        return self._numbers

    def any_in(self, values: Iterable[str]) -> np.ndarray:
        """Per row: does any of its values equal one of ``values``?"""
        out = np.zeros(self.n, dtype=bool)
        values = list(dict.fromkeys(values))
        if values and len(self.flat):
            hit = np.asarray(
                pc.is_in(self.flat, value_set=pa.array(values, type=pa.string())).to_numpy(zero_copy_only=False),
                dtype=bool,
            )
            out[self.parent[hit]] = True
        return out

    def require_numbers(self, label: str, op: str, pos: int) -> np.ndarray:
        numbers = self.numbers
        if numbers is None:
            raise InputError(
                f"filter expression: position {pos + 1}: {op} needs a numeric field, "
                f"but {label} has the non-numeric value {json.dumps(self._bad)}"
            )
        return numbers

    def atoms(self) -> tuple[np.ndarray, pd.Index]:
        """(value code per flat value, distinct values)."""
        if self._atoms is None:
            codes, uniques = pd.factorize(np.asarray(self.flat.to_numpy(zero_copy_only=False), dtype=object))
            self._atoms = codes.astype(np.int64), pd.Index(uniques, dtype=object)
        return self._atoms

    def rows_values(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(request row, value) for every value of the rows ``codes`` (code -1: none)."""
        if self._rows is None:
            self._rows = (
                np.searchsorted(self.parent, np.arange(self.n + 2)),
                np.asarray(self.flat.to_numpy(zero_copy_only=False), dtype=object),
            )
        indptr, flat = self._rows
        rows, positions = csr_ranges(indptr, codes)
        return rows, flat[positions]


def csr_ranges(indptr: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(request row, position) for every position in ``[indptr[c], indptr[c+1])`` of each code
    (code -1: none) — the concatenated ranges, built without a Python loop.
    ``indptr`` has at least ``max(codes) + 2`` entries."""
    valid = codes >= 0
    safe = np.where(valid, codes, 0)
    starts = np.where(valid, indptr[safe], 0)
    lengths = np.where(valid, indptr[safe + 1] - indptr[safe], 0)
    total = int(lengths.sum())
    rows = np.repeat(np.arange(len(codes), dtype=np.int64), lengths)
    offsets = np.cumsum(lengths) - lengths
    positions = np.arange(total, dtype=np.int64) - np.repeat(offsets - starts, lengths)
    return rows, positions


def find_column(context: FilterContext, dataset: str, name: str, cond: Condition, pos: int | None = None) -> Column:
    pos = cond.pos if pos is None else pos

    def fail(reason: str) -> InputError:
        return InputError(f"filter expression: position {pos + 1}: {reason}")

    frame = context.items if dataset == "Items" else context.users
    id_name, ids = ("ITEM_ID", context.item_ids) if dataset == "Items" else ("USER_ID", context.user_ids)
    columns = [] if frame is None else [str(c) for c in frame.columns]
    resolved = name if name in columns else None
    if resolved is None:
        folded = [c for c in columns if c.lower() == name.lower()]
        resolved = folded[0] if len(folded) == 1 else None
    if resolved is None and name.upper() == id_name:
        return context._cached(
            ("column", dataset, id_name), lambda: Column(f"{dataset}.{id_name}", pd.Series(ids, dtype=object))
        )
    if resolved is None:
        if frame is None:
            raise fail(f"{dataset}.{name}: there is no {dataset} dataset (no {dataset.lower()} metadata) to filter on")
        shown = ", ".join(columns[:40]) + (", ..." if len(columns) > 40 else "")
        raise fail(f"{dataset}.{name} is not a field of the {dataset} dataset (fields: {shown})")
    assert frame is not None  # a resolved name is one of the frame's columns
    return context._cached(("column", dataset, resolved), lambda: Column(f"{dataset}.{resolved}", frame[resolved]))
