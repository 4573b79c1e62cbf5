"""Featurization: from a validated dataset group to dense integer codes and encoded metadata.

- Interactions are filtered by the solution config (``eventType``, ``eventValueThreshold``)
  and by the user-history-length percentiles of the recipe, then stable-sorted by
  (user, TIMESTAMP) so that events with equal timestamps keep their file order.
- Ids stay strings at the edges: ``item_ids[i]`` / ``user_ids[u]`` map codes back. The item
  catalogue is the union of items seen in interactions, impressions and the Items dataset.
- Categorical metadata (``|`` multi-values) become lists of vocabulary codes (0 = missing),
  numeric metadata z-scores; contextual interaction columns become codes.

Everything is vectorised with pandas / pyarrow; nothing loops over events in Python.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .datasets import Dataset, DatasetGroup
from .errors import InputError
from .locations import Location, as_location
from .measure import release_memory
from .schemas import RESERVED_TYPES, Field

FEATURES_FORMAT = 1


@dataclass(frozen=True)
class FeaturizeOptions:
    event_type: str | None = None
    event_value_threshold: float | None = None
    min_user_history_length_percentile: float = 0.0
    max_user_history_length_percentile: float = 1.0
    # keep the impression lists; False for recipes that never read them (their ids still
    # join the catalogue, only the per-event lists are not kept)
    impressions: bool = True


@dataclass
class Features:
    item_ids: np.ndarray  # code -> ITEM_ID (str)
    user_ids: np.ndarray  # code -> USER_ID (str)
    interactions: pd.DataFrame  # user, item (int32), timestamp (int64), optional columns; sorted
    items: pd.DataFrame  # one row per item code
    users: pd.DataFrame  # one row per user code
    info: dict[str, Any] = field(default_factory=dict)
    # every imported event (user, item, timestamp, event_type; sorted like ``interactions``)
    # when event filters left some out of ``interactions``; None: ``interactions`` has them all
    events: pd.DataFrame | None = None

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.interactions)

    def sequences(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-user time-ordered item codes as CSR: ``items[indptr[u]:indptr[u+1]]``."""
        users = self.interactions["user"].to_numpy()
        counts = np.bincount(users, minlength=self.n_users)
        indptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return indptr, self.interactions["item"].to_numpy()

    def event_columns(self) -> tuple[np.ndarray, np.ndarray]:
        """Per event, aligned with :meth:`sequences`: the EVENT_TYPE code (-1 where none; the
        categorical's codes, no copy) and the timestamp."""
        frame = self.interactions
        kinds = (
            pd.Categorical(frame["event_type"]).codes
            if "event_type" in frame.columns
            else np.full(len(frame), -1, dtype=np.int8)
        )
        return np.asarray(kinds), frame["timestamp"].to_numpy(np.int64)

    def event_signals(self) -> np.ndarray:
        """Per-event [n_events, 2] int64: :meth:`event_columns` side by side (what a repeat
        head reads)."""
        return np.stack([column.astype(np.int64) for column in self.event_columns()], axis=1)

    def context_matrix(self) -> np.ndarray | None:
        """Per-event contextual codes [n_events, n_context] (0 = missing), or None."""
        cols = [c for c in self.info.get("context_columns", []) if c in self.interactions.columns]
        cols = [c for c in cols if self.interactions[c].dtype.kind in "iu"]
        if not cols:
            return None
        return np.stack([self.interactions[c].to_numpy(np.int64) for c in cols], axis=1)

    def with_interactions(self, interactions: pd.DataFrame) -> Features:
        """The same catalogue and metadata over a subset of the interactions (for splits)."""
        return Features(
            self.item_ids, self.user_ids, interactions.reset_index(drop=True), self.items, self.users, dict(self.info)
        )

    def where(self, rows: np.ndarray) -> Features:
        """:meth:`with_interactions` over the interactions where the boolean numpy mask
        ``rows`` holds (:func:`filtered_frame`)."""
        return self.with_interactions(filtered_frame(self.interactions, rows))

    def item_index(self, ids: np.ndarray) -> np.ndarray:
        """Codes of ITEM_IDs (-1 where unknown)."""
        return pd.Index(self.item_ids).get_indexer(pd.Index(ids))

    def user_index(self, ids: np.ndarray) -> np.ndarray:
        return pd.Index(self.user_ids).get_indexer(pd.Index(ids))


def filtered_frame(frame: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """The rows of ``frame`` where the boolean numpy mask ``rows`` holds, with a new range
    index: one filter per column (numpy or extension array), a quarter of the time of
    ``frame[rows].reset_index(drop=True)`` on 10M interactions (0.5 against 2.0 s), which
    goes through pandas' block manager and copies the result again."""
    columns = {}
    for name in frame.columns:
        column = frame[name]
        columns[name] = column.to_numpy()[rows] if isinstance(column.dtype, np.dtype) else column.array[rows]
    return pd.DataFrame(columns, columns=frame.columns, copy=False)


SLICE_ROWS = 250_000  # interactions encoded at a time (small slices: small transient copies)
TAKE_ROWS = 1_000_000
LIST_BLOCK_ROWS = 131_072  # rows of a list column gathered at a time
MAP_ROWS = 1 << 20  # codes mapped at a time


def featurize(
    group: DatasetGroup, options: FeaturizeOptions = FeaturizeOptions(), slice_rows: int | None = None
) -> Features:
    """The features of a dataset group: the interactions streamed through Arrow in slices of
    ``slice_rows`` rows (``_encode_interactions``), the id maps of every user and item
    (``_id_maps``), the interactions (and, with event filters, every event) stable-sorted by
    (user, TIMESTAMP), then the item and user metadata. No per-row Python objects, no
    whole-table copies of string columns, every column parsed once."""
    start = time.perf_counter()
    dataset = group.interactions
    _check_filter_columns(dataset, options)
    n_raw = dataset.num_rows
    items_df, item_fields = _metadata_source(group.items, "ITEM_ID")
    users_df, user_fields = _metadata_source(group.users, "USER_ID")

    context_fields = [f for f in dataset.schema.metadata_fields if f.name in dataset.column_names]
    columns, counts = _encode_interactions(dataset, options, context_fields, slice_rows)
    _check_filter_results(dataset.source, options, counts)
    release_memory(collect=False)  # the parsed slices, freed into Arrow's pool, before the id maps are built
    ids = _id_maps(columns, items_df, users_df)

    vocabularies: dict[str, list[str]] = {}
    data, every_event = _interaction_columns(columns, ids, options, context_fields, vocabularies)
    events = _sorted_frame(every_event) if every_event is not None else None
    columns.clear()
    release_memory(collect=False)  # the slices' buffers, before the sort allocates the final columns
    # stable sort by (user, timestamp): equal timestamps keep file order. The user history
    # length percentiles shape the training set only (``training_set``): every user's
    # events stay here, for inference, filters and UPDATE.
    interactions = _sorted_frame(data)
    del data
    if interactions.empty:
        raise InputError("no interactions left after filtering by event type and event value")

    numeric_stats: dict[str, dict[str, float]] = {}
    items = _metadata_table(ids.item_ids, items_df, "ITEM_ID", item_fields, "items", vocabularies, numeric_stats)
    users = _metadata_table(ids.user_ids, users_df, "USER_ID", user_fields, "users", vocabularies, numeric_stats)
    info = {
        **_source_info(group),
        "options": options.__dict__,
        "counts": _counts(n_raw, counts["kept"], interactions, ids),
        "vocabularies": vocabularies,
        "numeric_stats": numeric_stats,
        "context_columns": [f"ctx_{f.name}" for f in context_fields],
        "has_impressions": "impression" in interactions.columns,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return Features(ids.item_ids, ids.user_ids, interactions, items, users, info, events)


def _check_filter_columns(dataset: Dataset, options: FeaturizeOptions) -> None:
    """The event filters' columns must be there."""
    if options.event_type is not None and "EVENT_TYPE" not in dataset.column_names:
        raise InputError(f"{dataset.source}: eventType {options.event_type!r} given but there is no EVENT_TYPE column")
    if options.event_value_threshold is not None and "EVENT_VALUE" not in dataset.column_names:
        raise InputError(f"{dataset.source}: eventValueThreshold given but there is no EVENT_VALUE column")


def _check_filter_results(source: str, options: FeaturizeOptions, counts: dict[str, Any]) -> None:
    """Each event filter must keep some interactions (``counts`` of ``_encode_interactions``)."""
    if options.event_type is not None and counts["event_type"] == 0:
        known = ", ".join(sorted(str(v) for v in counts["event_types"] if v is not None)[:10])
        raise InputError(f"{source}: no interactions with EVENT_TYPE {options.event_type!r} (found: {known})")
    if options.event_value_threshold is not None and counts["kept"] == 0:
        raise InputError(f"{source}: no interactions with EVENT_VALUE >= {options.event_value_threshold}")


def _metadata_source(dataset: Dataset | None, id_column: str) -> tuple[pd.DataFrame | None, list[Field]]:
    """An Items or Users dataset's rows (the last one per id) and metadata fields (none without it)."""
    if dataset is None:
        return None, []
    return _dedupe(dataset.typed(), id_column), dataset.schema.metadata_fields


@dataclass
class _IdMaps:
    """The sorted id maps (code -> id) and, for each slice of an encoded id column, the codes
    of its dictionary's ids in the map."""

    item_ids: np.ndarray  # code -> ITEM_ID (str)
    user_ids: np.ndarray  # code -> USER_ID (str)
    item_codes: list[np.ndarray]  # per slice of ITEM_ID
    impression_codes: list[np.ndarray]  # per slice of IMPRESSION (none without the column)
    user_codes: list[np.ndarray]  # per slice of USER_ID


def _id_maps(columns: dict[str, Any], items_df: pd.DataFrame | None, users_df: pd.DataFrame | None) -> _IdMaps:
    """Every user and item of the dataset group, also those filtered out: the slices'
    dictionaries (and the Items and Users ids) merged into the sorted id maps, one hash
    table per map, and the codes to remap each slice with."""
    impressions = columns.get("IMPRESSION")
    item_dictionary, (item_codes, impression_codes, _) = _vocabulary(
        [
            columns["ITEM_ID"].dictionaries,
            impressions.dictionaries if impressions is not None else [],
            _ids(items_df, "ITEM_ID"),
        ],
        drop_empty=True,
    )
    user_dictionary, (user_codes, _) = _vocabulary(
        [columns["USER_ID"].dictionaries, _ids(users_df, "USER_ID")], drop_empty=True
    )
    item_ids = item_dictionary.to_numpy(zero_copy_only=False).astype(object)
    user_ids = user_dictionary.to_numpy(zero_copy_only=False).astype(object)
    return _IdMaps(item_ids, user_ids, item_codes, impression_codes, user_codes)


def _ids(frame: pd.DataFrame | None, column: str) -> list[pa.Array]:
    """The ids of an Items or Users dataset as Arrow strings (none without the dataset)."""
    return [] if frame is None else [pa.array(frame[column].to_numpy(dtype=object), type=pa.string())]


def _interaction_columns(
    columns: dict[str, Any],
    ids: _IdMaps,
    options: FeaturizeOptions,
    context_fields: list[Field],
    vocabularies: dict[str, list[str]],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The columns of the interactions (the rows the event filters keep) and, with event
    filters, of every imported event (user, item, timestamp, event_type: for filters on
    Interactions.EVENT_TYPE of any type), both unsorted; the encoded ``columns`` they are
    made of are popped as they go."""
    kept = columns.pop("kept")
    every_user = columns.pop("USER_ID").mapped_codes(ids.user_codes)
    every_item = columns.pop("ITEM_ID").mapped_codes(ids.item_codes)
    data: dict[str, Any] = {
        "user": every_user if kept is None else every_user[kept],
        "item": every_item if kept is None else every_item[kept],
        "timestamp": columns.pop("TIMESTAMP"),
    }
    data.update(_event_columns(columns, ids, options))
    data.update(_context_columns(columns, context_fields, vocabularies))
    if kept is None:
        return data, None
    events = {
        "user": every_user,
        "item": every_item,
        "timestamp": columns.pop("ALL_TIMESTAMP"),
        "event_type": columns.pop("ALL_EVENT_TYPE").categorical(),
    }
    return data, events


def _event_columns(columns: dict[str, Any], ids: _IdMaps, options: FeaturizeOptions) -> dict[str, Any]:
    """The optional columns the interactions have: event type (categorical), event value,
    recommendation id and, when ``options.impressions``, the impression lists (item codes)."""
    data: dict[str, Any] = {}
    if "EVENT_TYPE" in columns:
        data["event_type"] = columns["EVENT_TYPE"].categorical()
    if "EVENT_VALUE" in columns:
        data["event_value"] = columns.pop("EVENT_VALUE")
    if "RECOMMENDATION_ID" in columns:
        data["recommendation_id"] = columns.pop("RECOMMENDATION_ID")
    if "IMPRESSION" in columns and options.impressions:
        data["impression"] = columns.pop("IMPRESSION").flat_lists(ids.impression_codes)
    return data


def _context_columns(
    columns: dict[str, Any], context_fields: list[Field], vocabularies: dict[str, list[str]]
) -> dict[str, Any]:
    """``ctx_<name>`` per contextual column: numbers as they are, strings as codes into a
    sorted vocabulary (0 = missing), which goes into ``vocabularies``."""
    data: dict[str, Any] = {}
    for f in context_fields:
        column = columns.pop(f.name)
        if f.is_numeric:
            data[f"ctx_{f.name}"] = column
        else:
            vocab, (codes,) = _vocabulary([column.dictionaries], drop_empty=True)
            data[f"ctx_{f.name}"] = column.mapped_codes(codes) + 1  # 0 = missing
            vocabularies[f"interactions.{f.name}"] = vocab.to_pylist()
    return data


def _metadata_table(
    ids: np.ndarray,
    frame: pd.DataFrame | None,
    id_column: str,
    fields: list[Field],
    dataset: str,
    vocabularies: dict[str, list[str]],
    numeric_stats: dict[str, dict[str, float]],
) -> pd.DataFrame:
    """One row per item or user code: the id, the encoded metadata of ``frame`` (the Items
    or Users rows, see ``_encode_metadata``) and, for items, ``creation_timestamp``."""
    table = pd.DataFrame({id_column: ids})
    if frame is None:
        return table
    aligned = frame.set_index(id_column).reindex(ids)
    if dataset == "items" and "CREATION_TIMESTAMP" in aligned.columns:
        table["creation_timestamp"] = aligned["CREATION_TIMESTAMP"].to_numpy(dtype=np.float64)
    _encode_metadata(table, aligned, fields, dataset, vocabularies, numeric_stats)
    return table


def _source_info(group: DatasetGroup) -> dict[str, Any]:
    """Where the features come from: the dataset group's location and, per dataset, its
    fingerprint, file, imports and schema."""
    return {
        "format": FEATURES_FORMAT,
        "dataset_location": group.location,
        "fingerprints": {d.dataset_type: d.fingerprint for d in group.datasets()},
        "files": {d.dataset_type: {"source": d.source, "signature": d.signature} for d in group.datasets()},
        "imports": {d.dataset_type: d.imports() for d in group.datasets()},
        "schemas": {
            d.dataset_type: {"avro": d.schema.to_avro(), "from_file": d.schema.from_file, "columns": d.column_names}
            for d in group.datasets()
        },
    }


def _counts(n_raw: int, n_after_events: int, interactions: pd.DataFrame, ids: _IdMaps) -> dict[str, int]:
    """How many interactions, users and items there are at each step."""
    n_users, n_items = len(ids.user_ids), len(ids.item_ids)
    return {
        "raw_interactions": n_raw,
        "after_event_filters": n_after_events,
        "interactions": len(interactions),
        "users": n_users,
        "users_with_interactions": int((np.bincount(interactions["user"], minlength=n_users) > 0).sum()),
        "items": n_items,
        "items_with_interactions": int((np.bincount(interactions["item"], minlength=n_items) > 0).sum()),
    }


def _sorted_frame(data: dict[str, Any]) -> pd.DataFrame:
    """The columns stable-sorted by (user, timestamp), one take per column, one column at a
    time (the old column is released inside ``_take``); list columns (impressions, the
    largest) on a helper thread meanwhile, where there is a second core."""
    order = _sort_order(np.asarray(data["user"]), np.asarray(data["timestamp"]))
    names = list(data)
    lists = [name for name in names if isinstance(data[name], _Lists)]
    helper = _helper_thread() if lists else None
    try:
        aside = {name: helper.submit(_take, data.pop(name), order) for name in lists} if helper else {}
        for name in names:
            if name not in aside:
                data[name] = _take(data.pop(name), order)
        data.update((name, future.result()) for name, future in aside.items())
    finally:
        if helper is not None:
            helper.shutdown()
    return pd.DataFrame({name: data[name] for name in names}, copy=False)


def _sort_order(user: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
    """``np.lexsort((timestamp, user))`` in less time: a stable sort by timestamp (linear
    on rows already in time order), then a stable LSD radix sort by user on 16-bit digits
    (numpy's stable sort of uint16 keys is a radix sort), so the (user, timestamp) ties
    keep their row order as with lexsort."""
    if user.dtype != np.int32 or not len(user):  # (codes are int32)
        return np.lexsort((timestamp, user))
    order = np.argsort(timestamp, kind="stable")
    key = user[order]
    key -= key.min()  # wraps around within the unsigned view
    key = key.view(np.uint32)
    high = int(key.max())
    shift = 0
    while True:
        step = np.argsort((key >> shift if shift else key).astype(np.uint16), kind="stable")
        order = order[step]
        shift += 16
        if not high >> shift:
            return order
        key = key[step]


def training_set(features: Features, min_percentile: float = 0.0, max_percentile: float = 1.0) -> tuple[Features, int]:
    """The interactions of the users whose history length lies within the percentiles
    (Personalize's min/max_user_history_length_percentile), and how many users that drops.
    Only training reads this; inference and filters keep every user's events."""
    if min_percentile <= 0.0 and max_percentile >= 1.0:
        return features, 0
    users = features.interactions["user"].to_numpy()
    lengths = np.bincount(users, minlength=features.n_users)
    active = lengths[lengths > 0]
    lo = np.quantile(active, min_percentile) if len(active) else 0
    hi = np.quantile(active, max_percentile) if len(active) else 0
    keep_user = (lengths >= lo) & (lengths <= hi)
    dropped = int(((lengths > 0) & ~keep_user).sum())
    if not dropped:
        return features, 0
    kept = features.where(keep_user[users])
    kept.events = features.events
    return kept, dropped


class _Encoded:
    """One string column encoded slice by slice: int32 indices into each slice's own
    dictionary (``dictionaries``), turned into codes of a global dictionary by one mapping
    array per slice (``_vocabulary`` computes them for every slice at once)."""

    def __init__(self, keep_indices: bool = True):
        self.keep_indices = keep_indices  # False: only the dictionaries are kept (ids for the catalogue)
        self.indices: list[pa.Array | pa.ChunkedArray] = []  # per slice (a chunked slice: in its chunks)
        self.dictionaries: list[pa.Array] = []
        self.offsets: list[pa.Array] = []  # list columns (impressions): per-row offsets
        self.validity: list[pa.Array] = []
        self._all_codes: np.ndarray | None = None  # kept by ``codes(..., keep=True)``
        self._categorical: tuple[np.ndarray, pa.Array] | None = None

    def add(self, values: pa.Array | pa.ChunkedArray) -> None:
        """One slice: its indices and its dictionary (a chunked slice is encoded chunk by
        chunk with one hash table, without concatenating its strings first)."""
        encoded = pc.dictionary_encode(values)
        if isinstance(encoded, pa.ChunkedArray):
            chunks = encoded.chunks
            if not chunks:
                self.indices.append(pa.array([], pa.int32()))
                self.dictionaries.append(pa.array([], pa.string()))
                return
            if self.keep_indices:  # kept in chunks: ``_mapped`` maps them chunk by chunk
                self.indices.append(pa.chunked_array([c.indices for c in chunks], pa.int32()))
            self.dictionaries.append(chunks[-1].dictionary)  # every chunk holds the whole dictionary
            return
        if self.keep_indices:
            self.indices.append(encoded.indices)
        self.dictionaries.append(encoded.dictionary)

    def add_lists(self, values: pa.Array | pa.ChunkedArray) -> None:
        lists = pc.split_pattern(values, "|")
        for chunk in _chunks_of(lists):
            if self.keep_indices:
                self.offsets.append(chunk.offsets)
                self.validity.append(chunk.is_valid())
        self.add(pc.list_flatten(lists))

    def _mapped(self, mappings: list[np.ndarray], missing: int, out: np.ndarray) -> np.ndarray:
        """Every slice's codes (null: ``missing``) written into ``out`` (one allocation, no
        per-slice copies); the slice's indices are released as it goes."""
        indices_list, self.indices = self.indices[::-1], []
        position = 0
        for mapping in mappings:
            indices = indices_list.pop()
            with_missing = np.append(mapping, np.int32(missing)) if indices.null_count else mapping
            for chunk in _chunks_of(indices):
                for start in range(0, len(chunk), MAP_ROWS):  # small blocks: small transient index copies
                    block = chunk.slice(start, MAP_ROWS)
                    target = out[position : position + len(block)]
                    position += len(block)
                    if block.null_count:  # null -> the extra slot
                        np.take(with_missing, pc.fill_null(block, len(mapping)).to_numpy(), out=target)
                    else:
                        np.take(mapping, block.to_numpy(), out=target)
            del indices
            if len(indices_list) % 8 == 0:  # the released slices' memory back to the OS, before ``out`` grows
                pa.default_memory_pool().release_unused()
        return out

    def mapped_codes(self, mappings: list[np.ndarray], missing: int = -1) -> np.ndarray:
        """int32 code of every row; ``mappings[i]``: the codes of slice i's dictionary."""
        return self._mapped(mappings, missing, np.empty(sum(len(i) for i in self.indices), np.int32))

    def codes(self, dictionary: pa.Array, missing: int | None = None, rows=None, keep: bool = False) -> np.ndarray:
        """int32 code of every value in ``dictionary`` (unknown or null: ``missing``), for
        the rows where ``rows`` (a boolean numpy mask over all rows) holds. With ``keep``
        the codes of all rows are kept for a second call (the first returns the subset)."""
        if self._all_codes is not None:
            out = self._all_codes
        else:
            out = self.mapped_codes(_mappings_in(self.dictionaries, dictionary, missing), _missing(missing))
        self._all_codes = out if keep else None
        return out if rows is None else out[rows]

    def flat_lists(self, mappings: list[np.ndarray]) -> _Lists:
        """The list column with item codes (-1 for ids not in the dictionary), as flat arrays."""
        values = self.mapped_codes(mappings)
        offsets, base = [np.zeros(1, np.int64)], 0
        for slice_offsets in self.offsets:
            local = slice_offsets.to_numpy().astype(np.int64)
            offsets.append(local[1:] - local[0] + base)
            base += int(local[-1] - local[0])
        valid = [v.to_numpy(zero_copy_only=False) for v in self.validity]
        self.offsets, self.validity = [], []
        position = np.int32 if base < 2**31 else np.int64  # half the memory while the lists are sorted
        offsets_all = np.concatenate(offsets, dtype=position, casting="unsafe")
        return _Lists(offsets_all, values, np.concatenate(valid) if valid else np.zeros(0, bool))

    def lists(self, dictionary: pa.Array) -> pa.ChunkedArray:
        """The list column with item codes in ``dictionary`` (-1 for ids not in it)."""
        lists = self.flat_lists(_mappings_in(self.dictionaries, dictionary, -1))
        return lists.take(np.arange(len(lists.valid)))

    def categorical(self, rows: np.ndarray | None = None) -> pd.Categorical:
        """Codes into the categories in order of first appearance (like pandas' factorize),
        of every row or of the rows where ``rows`` holds (then only their categories)."""
        if self._categorical is None:
            categories, (mappings,) = _vocabulary([self.dictionaries], sort=False)
            self._categorical = self.mapped_codes(mappings), categories
        codes, categories = self._categorical
        if rows is not None:  # the categories of these rows only, in their order of first appearance
            local, present = pd.factorize(codes[rows])
            known = present >= 0
            renumber = np.append(np.full(len(present), -1, np.int32), np.int32(-1))
            renumber[np.flatnonzero(known)] = np.arange(int(known.sum()), dtype=np.int32)
            codes, categories = renumber[local], categories.take(pa.array(present[known]))
        return pd.Categorical.from_codes(codes, categories=categories.to_pandas().astype(object))


class _SharedDictionary(_Encoded):
    """An ``_Encoded`` whose slices share one dictionary, which each slice extends by its
    new values (in order of first appearance): for item ids and impression lists, many
    values out of one catalogue, where looking them up among those known (``index_in``)
    costs less than a hash table per slice, and the id maps merge one dictionary, not one
    per slice. ``mappings`` (of ``mapped_codes``, ``flat_lists``) hold one array: the
    codes of that dictionary's values, for every slice."""

    def __init__(self, keep_indices: bool = True):
        super().__init__(keep_indices)
        self.dictionaries = [pa.array([], pa.string())]
        self.patches: list[tuple[np.ndarray, np.ndarray]] = []  # per slice: rows of new values, their indices

    def add(self, values: pa.Array | pa.ChunkedArray) -> None:
        """One slice: the indices of its known values (null for the others) and, for its new
        values, their rows and indices (``mapped_codes`` writes them over the nulls: no
        copy of the indices to fill them in)."""
        known = self.dictionaries[0]
        rows = at_new = np.zeros(0, np.int64)
        if not len(known):  # every value is new: encoded as by ``_Encoded`` (no transient copies)
            chunks = _chunks_of(pc.dictionary_encode(values))
            self.dictionaries = [chunks[-1].dictionary] if chunks else self.dictionaries
            found = pa.chunked_array([c.indices for c in chunks], pa.int32())
        else:
            found = pc.index_in(values, value_set=known)
        if found.null_count and len(known):  # new values (or nulls): looked up among the new ones, after the known
            unknown = pc.is_null(found)
            rest = pc.filter(values, unknown)
            new = pc.drop_null(pc.unique(rest)).cast(pa.string())
            self.dictionaries = [pa.concat_arrays([known, new])]
            at_new = pc.fill_null(pc.index_in(rest, value_set=new), -1).to_numpy()
            rows = np.flatnonzero(_concatenated(unknown).to_numpy(zero_copy_only=False))
            rows, at_new = rows[at_new >= 0], at_new[at_new >= 0] + len(known)  # null values stay missing
        if self.keep_indices:
            self.indices.append(found)
            self.patches.append((rows, at_new))

    def mapped_codes(self, mappings: list[np.ndarray], missing: int = -1) -> np.ndarray:
        starts = np.cumsum([0] + [len(indices) for indices in self.indices])
        patches, self.patches = self.patches, []
        out = super().mapped_codes(mappings * len(self.indices), missing)
        for start, (rows, at_new) in zip(starts[:-1], patches, strict=True):
            out[start + rows] = mappings[0][at_new]
        return out


class _KeptRows:
    """The categorical of an ``_Encoded`` column over all rows, restricted to the rows the
    event filters keep (``rows``, set once the pass is over): one encoding for both."""

    def __init__(self, column: _Encoded):
        self.column = column
        self.rows: np.ndarray | None = None

    def categorical(self) -> pd.Categorical:
        return self.column.categorical(self.rows)


@dataclass
class _Lists:
    """A list column as flat numpy arrays: row r holds ``values[offsets[r]:offsets[r + 1]]``."""

    offsets: np.ndarray  # int32 (int64 from 2**31 values on), rows + 1
    values: np.ndarray  # int32
    valid: np.ndarray  # bool per row (False: a null list)

    def take(self, order: np.ndarray, block_rows: int = LIST_BLOCK_ROWS) -> pa.ChunkedArray:
        """The lists in ``order``, as Arrow chunks of ``block_rows`` rows (int32 offsets each;
        small blocks: the gather's temporaries are reused, not page-faulted in afresh)."""
        chunks = []
        position = np.int32 if len(self.values) < 2**31 else np.int64
        every_length = np.diff(self.offsets)  # 0 for null lists; in the smallest type (short lists: 1 byte)
        every_length[~self.valid] = 0
        every_length = every_length.astype(np.min_scalar_type(int(every_length.max(initial=0))))
        every_value = pa.array(self.values, type=pa.int32())  # Arrow's take gathers faster than numpy's
        for start in range(0, len(order), block_rows):
            rows = order[start : start + block_rows]
            begins, lengths = self.offsets[rows], every_length[rows]
            offsets = np.zeros(len(rows) + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
            values = every_value.take(pa.array(_runs(begins, lengths, offsets, position)))
            mask = pa.array(~self.valid[rows])
            chunks.append(pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, mask=mask))
        return pa.chunked_array(chunks, type=pa.list_(pa.int32()))


def _runs(begins: np.ndarray, lengths: np.ndarray, offsets: np.ndarray, dtype) -> np.ndarray:
    """The positions ``begins[r] .. begins[r] + lengths[r] - 1`` of every run r, one after
    the other (``offsets``: the runs' cumulative lengths): a cumulative sum of steps of 1,
    with a jump to the next run's begin at each run's first position."""
    steps = np.ones(int(offsets[-1]), dtype)
    nonempty = lengths > 0
    begins, firsts = begins[nonempty], offsets[:-1][nonempty]
    if len(begins):
        lasts = begins[:-1] + lengths[nonempty][:-1] - 1
        steps[firsts[0]] = begins[0]
        steps[firsts[1:]] = begins[1:] - lasts
    return np.cumsum(steps, out=steps)


def _chunks_of(values: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return values.chunks if isinstance(values, pa.ChunkedArray) else [values]


def _concatenated(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One Arrow array of an array or a chunked array."""
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _missing(missing: int | None) -> int:
    return -1 if missing is None else missing


def _mappings_in(dictionaries: list[pa.Array], dictionary: pa.Array, missing: int | None) -> list[np.ndarray]:
    """For each slice dictionary, the codes of its values in ``dictionary`` (else
    ``missing``): one ``index_in`` over all of them, so the value set is hashed once."""
    if not dictionaries:
        return []
    found = pc.index_in(pa.chunked_array(dictionaries, type=pa.string()), value_set=dictionary)
    codes = pc.fill_null(found, _missing(missing)).to_numpy().astype(np.int32)
    return np.split(codes, np.cumsum([len(d) for d in dictionaries])[:-1])


def _vocabulary(
    sources: list[list[pa.Array]], sort: bool = True, drop_empty: bool = False
) -> tuple[pa.Array, list[list[np.ndarray]]]:
    """One dictionary over several lists of string arrays (slice dictionaries, id columns):
    sorted (codes follow id order) or in order of first appearance, without nulls (and
    without empty strings with ``drop_empty``); and for each array of each source the codes
    of its values (-1 where a value is not in the dictionary). One hash table for all of
    them: each distinct value of each slice is hashed once."""
    arrays = [a for source in sources for a in source]
    encoded = pc.dictionary_encode(pa.chunked_array(arrays, type=pa.string()))
    values = encoded.chunk(0).dictionary if encoded.num_chunks else pa.array([], pa.string())
    keep = pc.is_valid(values)
    if drop_empty:
        keep = pc.and_(keep, pc.not_equal(values, ""))
    kept = np.flatnonzero(keep.to_numpy(zero_copy_only=False))
    dictionary = values.take(pa.array(kept, pa.int64()))
    order = pc.sort_indices(dictionary).to_numpy() if sort else np.arange(len(kept))
    if sort:
        dictionary = dictionary.take(pa.array(order, pa.int64()))
    code_of = np.full(len(values) + 1, -1, np.int32)  # the extra slot: null values
    code_of[kept[order]] = np.arange(len(kept), dtype=np.int32)
    indices = [pc.fill_null(c.indices, len(values)).to_numpy() for c in encoded.chunks]
    codes = code_of[np.concatenate(indices)] if indices else np.zeros(0, np.int32)
    del indices
    per_array = np.split(codes, np.cumsum([len(a) for a in arrays])[:-1]) if arrays else []
    out, position = [], 0
    for source in sources:
        out.append(per_array[position : position + len(source)])
        position += len(source)
    return dictionary, out


def _encode_interactions(
    dataset, options: FeaturizeOptions, context_fields: list[Field], slice_rows: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One pass over the dataset's slices, each column parsed once: each slice's string
    columns are dictionary-encoded (hash tables in C++) and only int codes, numbers and the
    slice's small dictionaries are kept. Per column: ``_Encoded`` for ids, types,
    impressions and categorical context (ids and, with event filters, types over all rows,
    so that the catalogue knows filtered-out users and items and filters see every event;
    the rest over the rows kept by the event filters), numpy arrays for numbers, an Arrow
    string column for RECOMMENDATION_ID; ``kept``: the boolean mask of the event filters
    over all rows (None: every row). Also returns counts for the filters' error messages."""
    encoder = _InteractionEncoder(dataset.column_names, options, context_fields)
    helper = _helper_thread() if "IMPRESSION" in encoder.names else None
    lists: Future[None] | None = None
    try:
        for every in dataset.slices(slice_rows or SLICE_ROWS):  # (read while the helper splits the lists)
            part, parsed = encoder.apply_event_filters(every)
            if lists is not None:  # the previous slice's lists: one slice in flight at a time
                lists.result()
            lists = encoder.add_impressions(part, helper)  # on the helper thread meanwhile
            encoder.add_every_row(every)
            del every  # the whole slice, before the kept rows are parsed
            encoder.add_kept_rows(part, parsed)
        if lists is not None:
            lists.result()
    finally:
        if helper is not None:
            helper.shutdown()
    return encoder.columns(), encoder.counts


class _InteractionEncoder:
    """The columns of ``_encode_interactions`` as they are gathered, slice by slice."""

    def __init__(self, names: list[str], options: FeaturizeOptions, context_fields: list[Field]):
        self.names = names
        self.options = options
        self.filtered = options.event_type is not None or options.event_value_threshold is not None
        self.encoded, self.every_row, self.strings = _string_columns(names, options, context_fields, self.filtered)
        self.numbers = _number_columns(names, context_fields)
        self.recommendation: list[pa.Array] = []
        self.masks: list[np.ndarray] = []
        self.all_timestamps: list[np.ndarray] = []
        self.counts: dict[str, Any] = {"event_type": 0, "kept": 0, "event_types": set()}

    def apply_event_filters(self, part: pa.Table) -> tuple[pa.Table, dict[str, np.ndarray]]:
        """The rows of a slice that the event filters keep and the columns already parsed
        for them (TIMESTAMP); every row's timestamp and the filters' mask are kept. Without
        event filters: the slice itself."""
        if not self.filtered:
            return part, {}
        timestamps = _numeric(part["TIMESTAMP"], pa.int64()).to_numpy()
        self.all_timestamps.append(timestamps)
        mask = _event_filter(part, self.options, self.counts)
        self.masks.append(mask)
        return part.filter(pa.array(mask)), {"TIMESTAMP": timestamps[mask]}

    def add_impressions(self, part: pa.Table, helper: ThreadPoolExecutor | None) -> Future[None] | None:
        """Splits and encodes the impression lists of the kept rows of a slice: on ``helper``
        when there is one (then returns its future, to wait for once the slice's other
        columns are encoded), else right away."""
        if "IMPRESSION" not in self.names:
            return None
        add_lists, values = self.encoded["IMPRESSION"].add_lists, part["IMPRESSION"]
        if helper is None:
            add_lists(values)
            return None
        return helper.submit(add_lists, values)

    def add_every_row(self, every: pa.Table) -> None:
        """The columns of a slice encoded over all its rows, kept or not: ids and, with
        event filters, event types (nulls without the column)."""
        for name in self.every_row:
            column = self.encoded[name] if name != "EVENT_TYPE" else self.encoded["ALL_EVENT_TYPE"]
            column.add(every[name])
        if self.filtered and "EVENT_TYPE" not in self.names:
            self.encoded["ALL_EVENT_TYPE"].add(pa.nulls(every.num_rows, pa.string()))

    def add_kept_rows(self, part: pa.Table, parsed: dict[str, np.ndarray]) -> None:
        """The columns of a slice encoded over the rows the event filters keep: categorical
        context (and event types without event filters), numbers, RECOMMENDATION_ID."""
        self.counts["kept"] += part.num_rows
        for name in self.strings:
            self.encoded[name].add(part[name])
        for name, (to, arrays) in self.numbers.items():
            if name in parsed:
                arrays.append(parsed[name])
            else:  # chunk by chunk, without copies: ``columns`` concatenates them once
                arrays.extend(c.to_numpy(zero_copy_only=False) for c in _chunks_of(_numeric(part[name], to)))
        if "RECOMMENDATION_ID" in self.names:
            self.recommendation.append(part["RECOMMENDATION_ID"].combine_chunks())

    def columns(self) -> dict[str, Any]:
        """Every column over all slices (see ``_encode_interactions``)."""
        out: dict[str, Any] = dict(self.encoded)
        kept = np.concatenate(self.masks) if self.filtered and self.masks else None
        out["kept"] = kept
        if isinstance(out.get("EVENT_TYPE"), _KeptRows):
            out["EVENT_TYPE"].rows = kept
        if self.filtered:
            timestamps = self.all_timestamps
            out["ALL_TIMESTAMP"] = np.concatenate(timestamps) if timestamps else np.zeros(0, np.int64)
        for name, (to, arrays) in self.numbers.items():
            out[name] = np.concatenate(arrays) if arrays else np.zeros(0, to.to_pandas_dtype())
        if "RECOMMENDATION_ID" in self.names:
            out["RECOMMENDATION_ID"] = pd.Series(
                pa.chunked_array(self.recommendation, type=pa.string()), dtype=pd.ArrowDtype(pa.string())
            )
        return out


def _string_columns(
    names: list[str], options: FeaturizeOptions, context_fields: list[Field], filtered: bool
) -> tuple[dict[str, Any], list[str], list[str]]:
    """An ``_Encoded`` per string column (with event filters, EVENT_TYPE is encoded once over
    all rows as ``ALL_EVENT_TYPE`` and restricted to the kept rows by ``_KeptRows``), and the
    names of those encoded over all rows and of those encoded over the kept rows."""
    # items: one catalogue, looked up slice by slice; users: a dictionary per slice (a growing
    # user base would cost more to look up in than to encode afresh)
    encoded: dict[str, Any] = {"USER_ID": _Encoded(), "ITEM_ID": _SharedDictionary()}
    encoded = {name: column for name, column in encoded.items() if name in names}
    every_row: list[str] = [n for n in ("USER_ID", "ITEM_ID") if n in names]
    strings = [f.name for f in context_fields if not f.is_numeric]
    if "EVENT_TYPE" in names:
        encoded["EVENT_TYPE"] = _Encoded()
        (every_row if filtered else strings).append("EVENT_TYPE")
    if filtered:  # every event's type (none without the column), for filters
        encoded["ALL_EVENT_TYPE"] = encoded["EVENT_TYPE"] if "EVENT_TYPE" in names else _Encoded()
        if "EVENT_TYPE" in names:
            encoded["EVENT_TYPE"] = _KeptRows(encoded["ALL_EVENT_TYPE"])
    encoded.update({name: _Encoded() for name in strings})
    if "IMPRESSION" in names:
        encoded["IMPRESSION"] = _SharedDictionary(keep_indices=options.impressions)
    return encoded, every_row, strings


def _number_columns(names: list[str], context_fields: list[Field]) -> dict[str, tuple[pa.DataType, list[np.ndarray]]]:
    """The numeric columns, each with its Arrow type and an empty list for its slices."""
    numbers: dict[str, tuple[pa.DataType, list[np.ndarray]]] = {"TIMESTAMP": (pa.int64(), [])}
    if "EVENT_VALUE" in names:
        numbers["EVENT_VALUE"] = (pa.float32(), [])
    for f in context_fields:
        if f.is_numeric:
            numbers[f.name] = (pa.float32(), [])
    return numbers


def _helper_thread() -> ThreadPoolExecutor | None:
    """One worker thread for a second core (Arrow's kernels release the GIL), None when
    Arrow is limited to one thread (``OMP_NUM_THREADS=1``, ``pa.set_cpu_count``)."""
    return ThreadPoolExecutor(1, thread_name_prefix="featurize") if pa.cpu_count() > 1 else None


def _event_filter(part: pa.Table, options: FeaturizeOptions, counts: dict[str, Any]) -> np.ndarray:
    """The rows of ``part`` that the event filters keep (numpy bool); counts the types."""
    mask = None
    if options.event_type is not None:
        mask = pc.fill_null(pc.equal(part["EVENT_TYPE"], options.event_type), False)
        n_type = pc.sum(mask).as_py() or 0
        counts["event_type"] += n_type
        if not n_type:
            counts["event_types"].update(pc.unique(part["EVENT_TYPE"]).to_pylist())
    if options.event_value_threshold is not None:
        above = pc.fill_null(
            pc.greater_equal(_numeric(part["EVENT_VALUE"], pa.float64()), options.event_value_threshold), False
        )
        mask = above if mask is None else pc.and_(mask, above)
    if mask is None:  # no filter: every row
        return np.ones(part.num_rows, dtype=bool)
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def _take(column, order: np.ndarray):
    """``column`` (numpy, Categorical, flat lists, Arrow-backed Series or ChunkedArray) in ``order``."""
    if isinstance(column, np.ndarray):
        return column[order]
    if isinstance(column, pd.Categorical):
        return pd.Categorical.from_codes(column.codes[order], categories=column.categories)
    if isinstance(column, _Lists):
        # gathered in small blocks: Arrow's take on a chunked list column concatenates it
        # first, which would double the transient memory
        taken = column.take(order)
        return pd.Series(taken, dtype=pd.ArrowDtype(taken.type))
    if isinstance(column, pa.ChunkedArray):
        values = column.combine_chunks()
        del column
        taken = pa.chunked_array(
            [values.take(pa.array(order[i : i + TAKE_ROWS])) for i in range(0, len(order), TAKE_ROWS)], type=values.type
        )
        return pd.Series(taken, dtype=pd.ArrowDtype(taken.type))
    return pd.Series(column.array._pa_array.take(pa.array(order)), dtype=column.dtype)


def fingerprint(features: Features) -> str:
    import hashlib

    digest = hashlib.sha256(repr(sorted(features.info.get("fingerprints", {}).items())).encode())
    digest.update(repr(sorted(features.info.get("options", {}).items())).encode())
    return digest.hexdigest()[:16]


def _dedupe(df: pd.DataFrame, id_column: str) -> pd.DataFrame:
    df = df[df[id_column].notna()]
    return df.drop_duplicates(subset=[id_column], keep="last")


def _sorted_unique(parts: list) -> pa.Array:
    """Distinct non-empty strings of several Arrow arrays, sorted (codes follow id order)."""
    chunks: list[pa.Array] = []
    for part in parts:
        chunks.extend(_chunks_of(part))
    values = pc.unique(pa.chunked_array(chunks, type=pa.string()) if chunks else pa.array([], pa.string()))
    values = values.filter(pc.and_(pc.is_valid(values), pc.not_equal(values, "")))
    return values.take(pc.sort_indices(values))


def _numeric(values, to: pa.DataType):
    """Cast validated string numbers ("  12 ", "1e3") to a numeric Arrow type (the
    whitespace is trimmed only when the plain cast refuses it)."""
    try:
        return _cast_number(values, to)
    except pa.ArrowInvalid:
        return _cast_number(pc.utf8_trim_whitespace(values), to)


def _cast_number(values, to: pa.DataType):
    if pa.types.is_integer(to):
        return pc.cast(values, to)
    return pc.cast(pc.cast(values, pa.float64()), to)


def _encode_metadata(
    target: pd.DataFrame,
    aligned: pd.DataFrame,
    fields: list[Field],
    dataset: str,
    vocabularies: dict[str, list[str]],
    numeric_stats: dict[str, dict[str, float]],
) -> None:
    reserved = set(RESERVED_TYPES[dataset])
    for f in fields:
        if f.name in reserved or f.name not in aligned.columns:
            continue
        col = aligned[f.name]
        target[f"raw_{f.name}"] = col.to_numpy()  # as read (typed), for filters and explanations
        if f.textual:
            continue
        if f.is_numeric:
            values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
            mean = float(np.nanmean(values)) if np.isfinite(values).any() else 0.0
            std = float(np.nanstd(values)) if np.isfinite(values).any() else 1.0
            std = std if std > 0 else 1.0
            target[f"num_{f.name}"] = np.nan_to_num((values - mean) / std).astype(np.float32)
            numeric_stats[f"{dataset}.{f.name}"] = {"mean": mean, "std": std}
        elif f.type == "boolean":
            target[f"num_{f.name}"] = col.astype("float64").fillna(0.0).to_numpy(dtype=np.float32)
        else:
            lists = pc.split_pattern(pa.array(col.to_numpy(dtype=object), type=pa.string(), from_pandas=True), "|")
            flat = lists.flatten()
            codes, vocab = pd.factorize(pd.Series(flat.to_numpy(zero_copy_only=False)), sort=True)
            arr = pa.ListArray.from_arrays(lists.offsets, pa.array(codes + 1, type=pa.int32()), mask=lists.is_null())
            target[f"cat_{f.name}"] = pd.Series(arr, dtype=pd.ArrowDtype(arr.type))
            vocabularies[f"{dataset}.{f.name}"] = [str(v) for v in vocab]


# --- persistence ---------------------------------------------------------------------------------


def save_features(features: Features, location: str | Location) -> Location:
    """Write the featurized dataset as Parquet files plus ``features.json`` (written last)."""
    loc = as_location(location)
    loc.makedirs()
    loc.child("interactions.parquet").write_parquet(features.interactions)
    loc.child("items.parquet").write_parquet(features.items)
    loc.child("users.parquet").write_parquet(features.users)
    if features.events is not None:
        loc.child("events.parquet").write_parquet(features.events)
    loc.child("features.json").write_json(features.info)
    return loc


def load_features(location: str | Location) -> Features:
    loc = as_location(location)
    marker = loc.child("features.json")
    if not marker.exists():
        raise InputError(f"{loc.url}: no featurized dataset here (features.json missing)")
    info = marker.read_json()
    interactions = loc.child("interactions.parquet").read_parquet()
    items = loc.child("items.parquet").read_parquet()
    users = loc.child("users.parquet").read_parquet()
    events = loc.child("events.parquet").read_parquet() if loc.child("events.parquet").exists() else None
    return Features(
        items["ITEM_ID"].to_numpy(dtype=object),
        users["USER_ID"].to_numpy(dtype=object),
        interactions,
        items,
        users,
        info,
        events,
    )
