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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .datasets import DatasetGroup
from .errors import InputError
from .locations import Location, as_location
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

    def with_interactions(self, interactions: pd.DataFrame) -> "Features":
        """The same catalogue and metadata over a subset of the interactions (for splits)."""
        return Features(self.item_ids, self.user_ids, interactions.reset_index(drop=True), self.items, self.users, dict(self.info))

    def item_index(self, ids: np.ndarray) -> np.ndarray:
        """Codes of ITEM_IDs (-1 where unknown)."""
        return pd.Index(self.item_ids).get_indexer(pd.Index(ids))

    def user_index(self, ids: np.ndarray) -> np.ndarray:
        return pd.Index(self.user_ids).get_indexer(pd.Index(ids))


def featurize(group: DatasetGroup, options: FeaturizeOptions = FeaturizeOptions()) -> Features:
    """Vectorised on Arrow: string ids are mapped to codes with hash lookups
    (``pc.index_in``), numeric columns cast in C++, no per-row Python objects."""
    start = time.perf_counter()
    source = group.interactions.source
    table = group.interactions.table  # every column a string, validated
    n_raw = table.num_rows
    mask = None
    if options.event_type is not None:
        if "EVENT_TYPE" not in table.column_names:
            raise InputError(f"{source}: eventType {options.event_type!r} given but there is no EVENT_TYPE column")
        mask = pc.fill_null(pc.equal(table["EVENT_TYPE"], options.event_type), False)
        if not pc.any(mask).as_py():
            known = ", ".join(sorted(str(v) for v in pc.unique(table["EVENT_TYPE"]).to_pylist() if v is not None)[:10])
            raise InputError(f"{source}: no interactions with EVENT_TYPE {options.event_type!r} (found: {known})")
    if options.event_value_threshold is not None:
        if "EVENT_VALUE" not in table.column_names:
            raise InputError(f"{source}: eventValueThreshold given but there is no EVENT_VALUE column")
        above = pc.fill_null(pc.greater_equal(_numeric(table["EVENT_VALUE"], pa.float64()), options.event_value_threshold), False)
        mask = above if mask is None else pc.and_(mask, above)
        if not pc.any(mask).as_py():
            raise InputError(f"{source}: no interactions with EVENT_VALUE >= {options.event_value_threshold}")
    inter = table.filter(mask) if mask is not None else table
    n_after_events = inter.num_rows

    items_df = _dedupe(group.items.typed(), "ITEM_ID") if group.items is not None else None
    users_df = _dedupe(group.users.typed(), "USER_ID") if group.users is not None else None

    impressions = None
    if "IMPRESSION" in inter.column_names:
        impressions = pc.split_pattern(inter["IMPRESSION"].combine_chunks(), "|")

    # --- id maps: every user and item of the dataset group, also those filtered out ----------------
    item_parts = [table["ITEM_ID"]]
    if items_df is not None:
        item_parts.append(pa.array(items_df["ITEM_ID"].to_numpy(dtype=object), type=pa.string()))
    if impressions is not None:
        item_parts.append(impressions.flatten())
    item_dictionary = _sorted_unique(item_parts)
    user_parts = [table["USER_ID"]]
    if users_df is not None:
        user_parts.append(pa.array(users_df["USER_ID"].to_numpy(dtype=object), type=pa.string()))
    user_dictionary = _sorted_unique(user_parts)
    item_ids = item_dictionary.to_numpy(zero_copy_only=False).astype(object)
    user_ids = user_dictionary.to_numpy(zero_copy_only=False).astype(object)

    # --- interactions -----------------------------------------------------------------------
    out = pd.DataFrame(
        {
            "user": _codes(inter["USER_ID"], user_dictionary),
            "item": _codes(inter["ITEM_ID"], item_dictionary),
            "timestamp": _numeric(inter["TIMESTAMP"], pa.int64()).to_numpy(),
        }
    )
    if "EVENT_TYPE" in inter.column_names:
        out["event_type"] = pd.Series(inter["EVENT_TYPE"].combine_chunks().dictionary_encode()).astype("category")
    if "EVENT_VALUE" in inter.column_names:
        out["event_value"] = _numeric(inter["EVENT_VALUE"], pa.float32()).to_numpy(zero_copy_only=False)
    if "RECOMMENDATION_ID" in inter.column_names:
        out["recommendation_id"] = pd.Series(inter["RECOMMENDATION_ID"].combine_chunks(), dtype=pd.ArrowDtype(pa.string()))
    if impressions is not None:
        codes = pa.array(_codes(impressions.flatten(), item_dictionary, missing=-1), type=pa.int32())
        arr = pa.ListArray.from_arrays(impressions.offsets, codes, mask=impressions.is_null())
        out["impression"] = pd.Series(arr, dtype=pd.ArrowDtype(arr.type))
    vocabularies: dict[str, list[str]] = {}
    context_fields = [f for f in group.interactions.schema.metadata_fields if f.name in inter.column_names]
    for f in context_fields:
        if f.is_numeric:
            out[f"ctx_{f.name}"] = _numeric(inter[f.name], pa.float32()).to_numpy(zero_copy_only=False)
        else:
            vocab = _sorted_unique([inter[f.name]])
            out[f"ctx_{f.name}"] = _codes(inter[f.name], vocab, missing=-1) + 1  # 0 = missing
            vocabularies[f"interactions.{f.name}"] = vocab.to_pylist()

    # stable sort by (user, timestamp): equal timestamps keep file order
    order = np.lexsort((out["timestamp"].to_numpy(), out["user"].to_numpy()))
    out = out.iloc[order].reset_index(drop=True)

    # --- user history length percentiles --------------------------------------------------------
    lengths = np.bincount(out["user"].to_numpy(), minlength=len(user_ids))
    active = lengths[lengths > 0]
    lo = np.quantile(active, options.min_user_history_length_percentile) if len(active) else 0
    hi = np.quantile(active, options.max_user_history_length_percentile) if len(active) else 0
    keep_user = (lengths >= lo) & (lengths <= hi)
    n_users_dropped = int(((lengths > 0) & ~keep_user).sum())
    out = out[keep_user[out["user"].to_numpy()]].reset_index(drop=True)
    if out.empty:
        raise InputError("no interactions left after filtering by event type, event value and user history length")

    # --- item and user metadata --------------------------------------------------------------------
    items = pd.DataFrame({"ITEM_ID": item_ids})
    numeric_stats: dict[str, dict[str, float]] = {}
    if items_df is not None:
        aligned = items_df.set_index("ITEM_ID").reindex(item_ids)
        if "CREATION_TIMESTAMP" in aligned.columns:
            items["creation_timestamp"] = aligned["CREATION_TIMESTAMP"].to_numpy(dtype=np.float64)
        _encode_metadata(items, aligned, group.items.schema.metadata_fields, "items", vocabularies, numeric_stats)
    users = pd.DataFrame({"USER_ID": user_ids})
    if users_df is not None:
        aligned = users_df.set_index("USER_ID").reindex(user_ids)
        _encode_metadata(users, aligned, group.users.schema.metadata_fields, "users", vocabularies, numeric_stats)

    info = {
        "format": FEATURES_FORMAT,
        "dataset_location": group.location,
        "fingerprints": {d.dataset_type: d.fingerprint for d in group.datasets()},
        "files": {d.dataset_type: {"source": d.source, "signature": d.signature} for d in group.datasets()},
        "options": options.__dict__,
        "counts": {
            "raw_interactions": n_raw,
            "after_event_filters": n_after_events,
            "interactions": len(out),
            "users_dropped_by_history_percentiles": n_users_dropped,
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
    return Features(item_ids, user_ids, out, items, users, info)


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
    chunks = []
    for part in parts:
        chunks.extend(part.chunks if isinstance(part, pa.ChunkedArray) else [part])
    values = pc.unique(pa.chunked_array(chunks, type=pa.string()) if chunks else pa.array([], pa.string()))
    values = values.filter(pc.and_(pc.is_valid(values), pc.not_equal(values, "")))
    return values.take(pc.sort_indices(values))


def _codes(values, dictionary: pa.Array, missing: int | None = None) -> np.ndarray:
    """int32 code of each value in ``dictionary``; nulls/unknowns get ``missing``."""
    codes = pc.index_in(values, value_set=dictionary)
    if missing is not None:
        codes = pc.fill_null(codes, missing)
    return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int32)


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
    _write_parquet(loc.child("interactions.parquet"), features.interactions)
    _write_parquet(loc.child("items.parquet"), features.items)
    _write_parquet(loc.child("users.parquet"), features.users)
    loc.child("features.json").write_json(features.info)
    return loc


def load_features(location: str | Location) -> Features:
    loc = as_location(location)
    marker = loc.child("features.json")
    if not marker.exists():
        raise InputError(f"{loc.url}: no featurized dataset here (features.json missing)")
    info = marker.read_json()
    interactions = _read_parquet(loc.child("interactions.parquet"))
    items = _read_parquet(loc.child("items.parquet"))
    users = _read_parquet(loc.child("users.parquet"))
    return Features(
        items["ITEM_ID"].to_numpy(dtype=object), users["USER_ID"].to_numpy(dtype=object), interactions, items, users, info
    )


def _write_parquet(loc: Location, df: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    with loc.atomic_writer() as fh:
        pq.write_table(table, fh, compression="zstd")


def _read_parquet(loc: Location) -> pd.DataFrame:
    with loc.open("rb") as fh:
        table = pq.read_table(fh)
    return table.to_pandas(types_mapper=lambda t: pd.ArrowDtype(t) if pa.types.is_list(t) else None)
