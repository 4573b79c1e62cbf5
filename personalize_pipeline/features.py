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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .datasets import DatasetGroup
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

    def item_index(self, ids: np.ndarray) -> np.ndarray:
        """Codes of ITEM_IDs (-1 where unknown)."""
        return pd.Index(self.item_ids).get_indexer(pd.Index(ids))

    def user_index(self, ids: np.ndarray) -> np.ndarray:
        return pd.Index(self.user_ids).get_indexer(pd.Index(ids))


SLICE_ROWS = 250_000  # interactions encoded at a time (small slices: small transient copies)
TAKE_ROWS = 1_000_000


def featurize(
    group: DatasetGroup, options: FeaturizeOptions = FeaturizeOptions(), slice_rows: int | None = None
) -> Features:
    """Streams the interactions through Arrow in slices of ``slice_rows`` rows: each slice's
    string columns are dictionary-encoded (hash tables in C++) and only int codes, numbers
    and the slice's small dictionaries are kept; the dictionaries are merged into the sorted
    id maps at the end and the codes remapped. No per-row Python objects, no whole-table
    copies of string columns."""
    start = time.perf_counter()
    dataset = group.interactions
    source = dataset.source
    names = dataset.column_names
    if options.event_type is not None and "EVENT_TYPE" not in names:
        raise InputError(f"{source}: eventType {options.event_type!r} given but there is no EVENT_TYPE column")
    if options.event_value_threshold is not None and "EVENT_VALUE" not in names:
        raise InputError(f"{source}: eventValueThreshold given but there is no EVENT_VALUE column")
    n_raw = dataset.num_rows

    items_df = _dedupe(group.items.typed(), "ITEM_ID") if group.items is not None else None
    users_df = _dedupe(group.users.typed(), "USER_ID") if group.users is not None else None
    item_fields = group.items.schema.metadata_fields if group.items is not None else []
    user_fields = group.users.schema.metadata_fields if group.users is not None else []

    context_fields = [f for f in dataset.schema.metadata_fields if f.name in names]
    columns, counts = _encode_interactions(dataset, options, context_fields, slice_rows)
    if options.event_type is not None and counts["event_type"] == 0:
        known = ", ".join(sorted(str(v) for v in counts["event_types"] if v is not None)[:10])
        raise InputError(f"{source}: no interactions with EVENT_TYPE {options.event_type!r} (found: {known})")
    if options.event_value_threshold is not None and counts["kept"] == 0:
        raise InputError(f"{source}: no interactions with EVENT_VALUE >= {options.event_value_threshold}")
    n_after_events = counts["kept"]

    # --- id maps: every user and item of the dataset group, also those filtered out ----------------
    item_parts = list(columns["ITEM_ID"].dictionaries)
    if items_df is not None:
        item_parts.append(pa.array(items_df["ITEM_ID"].to_numpy(dtype=object), type=pa.string()))
    impressions = columns.get("IMPRESSION")
    if impressions is not None:
        item_parts += impressions.dictionaries
    item_dictionary = _sorted_unique(item_parts)
    user_parts = list(columns["USER_ID"].dictionaries)
    if users_df is not None:
        user_parts.append(pa.array(users_df["USER_ID"].to_numpy(dtype=object), type=pa.string()))
    user_dictionary = _sorted_unique(user_parts)
    item_ids = item_dictionary.to_numpy(zero_copy_only=False).astype(object)
    user_ids = user_dictionary.to_numpy(zero_copy_only=False).astype(object)

    # --- interactions -----------------------------------------------------------------------
    kept = columns.pop("kept")
    data: dict[str, Any] = {
        "user": columns["USER_ID"].codes(user_dictionary, rows=kept, keep=kept is not None),
        "item": columns["ITEM_ID"].codes(item_dictionary, rows=kept, keep=kept is not None),
        "timestamp": columns.pop("TIMESTAMP"),
    }
    if "EVENT_TYPE" in columns:
        data["event_type"] = columns.pop("EVENT_TYPE").categorical()
    if "EVENT_VALUE" in columns:
        data["event_value"] = columns.pop("EVENT_VALUE")
    if "RECOMMENDATION_ID" in columns:
        data["recommendation_id"] = columns.pop("RECOMMENDATION_ID")
    if impressions is not None:
        data["impression"] = columns.pop("IMPRESSION").lists(item_dictionary)
    vocabularies: dict[str, list[str]] = {}
    for f in context_fields:
        column = columns.pop(f.name)
        if f.is_numeric:
            data[f"ctx_{f.name}"] = column
        else:
            vocab = _sorted_unique(column.dictionaries)
            data[f"ctx_{f.name}"] = column.codes(vocab, missing=-1) + 1  # 0 = missing
            vocabularies[f"interactions.{f.name}"] = vocab.to_pylist()

    events = None
    if kept is not None:  # every imported event, for filters (Interactions.EVENT_TYPE of any type)
        events = _sorted_frame(
            {
                "user": columns["USER_ID"].codes(user_dictionary),
                "item": columns["ITEM_ID"].codes(item_dictionary),
                "timestamp": columns.pop("ALL_TIMESTAMP"),
                "event_type": columns.pop("ALL_EVENT_TYPE").categorical(),
            }
        )
    release_memory()  # the slices' buffers, before the sort allocates the final columns
    # stable sort by (user, timestamp): equal timestamps keep file order. The user history
    # length percentiles shape the training set only (``training_set``): every user's
    # events stay here, for inference, filters and UPDATE.
    del kept
    out = _sorted_frame(data)
    del data
    if out.empty:
        raise InputError("no interactions left after filtering by event type and event value")

    # --- item and user metadata --------------------------------------------------------------------
    items = pd.DataFrame({"ITEM_ID": item_ids})
    numeric_stats: dict[str, dict[str, float]] = {}
    if items_df is not None:
        aligned = items_df.set_index("ITEM_ID").reindex(item_ids)
        if "CREATION_TIMESTAMP" in aligned.columns:
            items["creation_timestamp"] = aligned["CREATION_TIMESTAMP"].to_numpy(dtype=np.float64)
        _encode_metadata(items, aligned, item_fields, "items", vocabularies, numeric_stats)
    users = pd.DataFrame({"USER_ID": user_ids})
    if users_df is not None:
        aligned = users_df.set_index("USER_ID").reindex(user_ids)
        _encode_metadata(users, aligned, user_fields, "users", vocabularies, numeric_stats)

    info = {
        "format": FEATURES_FORMAT,
        "dataset_location": group.location,
        "fingerprints": {d.dataset_type: d.fingerprint for d in group.datasets()},
        "files": {d.dataset_type: {"source": d.source, "signature": d.signature} for d in group.datasets()},
        "imports": {d.dataset_type: d.imports() for d in group.datasets()},
        "schemas": {
            d.dataset_type: {"avro": d.schema.to_avro(), "from_file": d.schema.from_file, "columns": d.column_names}
            for d in group.datasets()
        },
        "options": options.__dict__,
        "counts": {
            "raw_interactions": n_raw,
            "after_event_filters": n_after_events,
            "interactions": len(out),
            "users": len(user_ids),
            "users_with_interactions": int((np.bincount(out["user"], minlength=len(user_ids)) > 0).sum()),
            "items": len(item_ids),
            "items_with_interactions": int((np.bincount(out["item"], minlength=len(item_ids)) > 0).sum()),
        },
        "vocabularies": vocabularies,
        "numeric_stats": numeric_stats,
        "context_columns": [f"ctx_{f.name}" for f in context_fields],
        "has_impressions": impressions is not None,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return Features(item_ids, user_ids, out, items, users, info, events)


def _sorted_frame(data: dict[str, Any]) -> pd.DataFrame:
    """The columns stable-sorted by (user, timestamp), one take per column, one column at a
    time (the old column is released inside ``_take``)."""
    order = np.lexsort((data["timestamp"], data["user"]))
    for name in list(data):
        data[name] = _take(data.pop(name), order)
    return pd.DataFrame(data, copy=False)


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
    kept = features.with_interactions(features.interactions[keep_user[users]])
    kept.events = features.events
    return kept, dropped


class _Encoded:
    """One string column encoded slice by slice: int32 indices into each slice's own
    dictionary (``dictionaries``), remapped to a global dictionary on request."""

    def __init__(self):
        self.indices: list[pa.Array] = []
        self.dictionaries: list[pa.Array] = []
        self.offsets: list[pa.Array] = []  # list columns (impressions): per-row offsets
        self.validity: list[pa.Array] = []
        self._all_codes: np.ndarray | None = None  # kept by ``codes(..., keep=True)``

    def add(self, values: pa.Array) -> None:
        encoded = pc.dictionary_encode(values)
        self.indices.append(encoded.indices)
        self.dictionaries.append(encoded.dictionary)

    def add_lists(self, values: pa.Array) -> None:
        lists = pc.split_pattern(values, "|")
        self.offsets.append(lists.offsets)
        self.validity.append(lists.is_valid())
        self.add(lists.flatten())

    def _mapped(self, dictionary: pa.Array, missing: int | None) -> Iterator[np.ndarray]:
        """Each slice's codes in ``dictionary``; the slice's indices are released as it goes."""
        indices_list, self.indices = self.indices, []
        for local in self.dictionaries:
            indices = indices_list.pop(0)
            mapping = pc.index_in(local, value_set=dictionary)
            mapping = (
                pc.fill_null(mapping, -1 if missing is None else missing)
                .to_numpy(zero_copy_only=False)
                .astype(np.int32)
            )
            idx = pc.fill_null(indices, len(local)).to_numpy(zero_copy_only=False)  # null -> the extra slot
            yield np.append(mapping, np.int32(-1 if missing is None else missing))[idx]

    def codes(self, dictionary: pa.Array, missing: int | None = None, rows=None, keep: bool = False) -> np.ndarray:
        """int32 code of every value in ``dictionary`` (unknown or null: ``missing``), for
        the rows where ``rows`` (a boolean numpy mask over all rows) holds. With ``keep``
        the codes of all rows are kept for a second call (the first returns the subset)."""
        if self._all_codes is not None:
            out = self._all_codes
        else:
            out = np.concatenate(list(self._mapped(dictionary, missing))) if self.indices else np.zeros(0, np.int32)
        self._all_codes = out if keep else None
        if rows is not None:
            out = out[rows]
        return out

    def lists(self, dictionary: pa.Array) -> pa.ChunkedArray:
        """The list column with item codes (-1 for ids not in ``dictionary``)."""
        chunks = []
        for codes, offsets, valid in zip(self._mapped(dictionary, -1), self.offsets, self.validity, strict=True):
            chunks.append(pa.ListArray.from_arrays(offsets, pa.array(codes, type=pa.int32()), mask=pc.invert(valid)))
        self.offsets, self.validity = [], []
        return pa.chunked_array(chunks, type=pa.list_(pa.int32()))

    def categorical(self) -> pd.Categorical:
        """Codes into the categories in order of first appearance (like pandas' factorize)."""
        categories = (
            pc.unique(pa.chunked_array(self.dictionaries, type=pa.string()))
            if self.dictionaries
            else pa.array([], pa.string())
        )
        codes = self.codes(categories)
        return pd.Categorical.from_codes(codes, categories=categories.to_pandas().astype(object))


def _encode_interactions(
    dataset, options: FeaturizeOptions, context_fields: list[Field], slice_rows: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One pass over the dataset's slices. Per column: ``_Encoded`` for ids, types,
    impressions and categorical context (ids over all rows, so that the catalogue knows
    filtered-out users and items; the rest over the rows kept by the event filters), numpy
    arrays for numbers, an Arrow string column for RECOMMENDATION_ID; ``kept``: the
    boolean mask of the event filters over all rows (None: every row). Also returns counts
    for the filters' error messages."""
    names = dataset.column_names
    encoded = {name: _Encoded() for name in ("USER_ID", "ITEM_ID") if name in names}
    strings = [n for n in ("EVENT_TYPE",) if n in names] + [f.name for f in context_fields if not f.is_numeric]
    encoded.update({name: _Encoded() for name in strings})
    if "IMPRESSION" in names:
        encoded["IMPRESSION"] = _Encoded()
    numbers: dict[str, tuple[pa.DataType, list[np.ndarray]]] = {"TIMESTAMP": (pa.int64(), [])}
    if "EVENT_VALUE" in names:
        numbers["EVENT_VALUE"] = (pa.float32(), [])
    for f in context_fields:
        if f.is_numeric:
            numbers[f.name] = (pa.float32(), [])
    recommendation: list[pa.Array] = []
    masks: list[np.ndarray] = []
    counts: dict[str, Any] = {"event_type": 0, "kept": 0, "event_types": set()}
    filtered = options.event_type is not None or options.event_value_threshold is not None
    if filtered:
        encoded["ALL_EVENT_TYPE"] = _Encoded()
        all_timestamps: list[np.ndarray] = []
    for part in dataset.slices(slice_rows or SLICE_ROWS):
        for name in ("USER_ID", "ITEM_ID"):
            encoded[name].add(part[name].combine_chunks())
        if filtered:  # every event, for filters
            types = part["EVENT_TYPE"] if "EVENT_TYPE" in names else pa.nulls(part.num_rows, pa.string())
            encoded["ALL_EVENT_TYPE"].add(types.combine_chunks() if isinstance(types, pa.ChunkedArray) else types)
            all_timestamps.append(_numeric(part["TIMESTAMP"], pa.int64()).to_numpy())
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
        if mask is not None:
            masks.append(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))
            part = part.filter(mask)
        counts["kept"] += part.num_rows
        for name in strings:
            encoded[name].add(part[name].combine_chunks())
        if "IMPRESSION" in names:
            encoded["IMPRESSION"].add_lists(part["IMPRESSION"].combine_chunks())
        for name, (to, arrays) in numbers.items():
            arrays.append(_numeric(part[name], to).to_numpy())
        if "RECOMMENDATION_ID" in names:
            recommendation.append(part["RECOMMENDATION_ID"].combine_chunks())
    out: dict[str, Any] = dict(encoded)
    kept = np.concatenate(masks) if filtered and masks else None
    out["kept"] = kept
    if filtered:
        out["ALL_TIMESTAMP"] = np.concatenate(all_timestamps) if all_timestamps else np.zeros(0, np.int64)
    for name, (to, arrays) in numbers.items():
        out[name] = np.concatenate(arrays) if arrays else np.zeros(0, to.to_pandas_dtype())
    if "RECOMMENDATION_ID" in names:
        out["RECOMMENDATION_ID"] = pd.Series(
            pa.chunked_array(recommendation, type=pa.string()), dtype=pd.ArrowDtype(pa.string())
        )
    return out, counts


def _take(column, order: np.ndarray):
    """``column`` (numpy, Categorical, Arrow-backed Series or ChunkedArray) in ``order``."""
    if isinstance(column, np.ndarray):
        return column[order]
    if isinstance(column, pd.Categorical):
        return pd.Categorical.from_codes(column.codes[order], categories=column.categories)
    if isinstance(column, pa.ChunkedArray):
        # one contiguous array, then takes of TAKE_ROWS rows: Arrow's take on a chunked
        # list column concatenates it first, which would double the transient memory
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
        chunks.extend(part.chunks if isinstance(part, pa.ChunkedArray) else [part])
    values = pc.unique(pa.chunked_array(chunks, type=pa.string()) if chunks else pa.array([], pa.string()))
    values = values.filter(pc.and_(pc.is_valid(values), pc.not_equal(values, "")))
    return values.take(pc.sort_indices(values))


def _numeric(values, to: pa.DataType):
    """Cast validated string numbers ("  12 ", "1e3") to a numeric Arrow type."""
    values = pc.utf8_trim_whitespace(values)
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
