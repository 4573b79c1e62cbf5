"""INCREMENTAL imports: an UPDATE reads, validates and featurizes only the files that are new
since the solution's latest version, and adds them to the featurized dataset that version
stored (``versions/<id>/features/``), so its cost follows the new data, not the history.

- ``plan_increment`` (imports.py) sorts the files into new / re-delivered, and refuses
  ("run FULL") when a file the version imported was changed or removed.
- New files are read with the schema of the data already imported (``info["schemas"]``):
  a file whose columns differ fails with a line naming it; each new file is validated on
  its own (the Personalize minimums hold for the whole dataset, not for each import).
- ``extend_features``: new user and item ids are appended to the id maps (the codes of
  known ids never change), interactions are appended and re-sorted by (user, time), items
  and users are upserted by id (the later row wins) and their metadata re-encoded; the
  models map changed vocabularies onto the ones they were trained with.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .datasets import Dataset, DatasetFiles, read_files
from .errors import InputError
from .features import (
    Features,
    FeaturizeOptions,
    _dedupe,
    _encode_interactions,
    _encode_metadata,
    _sorted_frame,
    _sorted_unique,
    load_features,
)
from .imports import DataFile, ImportPlan, plan_increment
from .locations import Location, as_location
from .schemas import DATASET_TYPES, Schema, parse_avro
from .store import read_manifest, resolve_version


@dataclass
class Increment:
    """What an UPDATE imports: the plan, the new files as datasets, their validation."""

    base_version: str
    plan: ImportPlan
    group: DatasetFiles | None  # None: nothing new
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.group is None


def read_increment(
    dataset: str | Location, solution: str | Location, validate_files: bool = True
) -> tuple[Increment, Location]:
    """Plan and read the files new since the latest version of ``solution``; returns the
    increment and the location of that version (whose ``features/`` it extends)."""
    root = as_location(dataset)
    try:
        resolve_version(solution, full_only=True)
    except InputError as exc:
        raise InputError(f"UPDATE needs a FULL solution version to start from: {exc}") from None
    base = resolve_version(solution)
    manifest = read_manifest(base)
    recorded = manifest.get("dataset", {}).get("imports")
    if not recorded or not base.child("features", "features.json").exists():
        raise InputError(
            f"{base.url}: this solution version records no imports (made by an older release): run FULL once"
        )
    plan = plan_increment(root, recorded, manifest["solution_version"])
    increment = Increment(manifest["solution_version"], plan, None, plan.warnings())
    if not plan.new_files:
        return increment, base
    schemas = base.child("features", "features.json").read_json().get("schemas", {})
    datasets = {t: _read_new(root, t, plan, schemas.get(t)) for t in DATASET_TYPES}
    group = DatasetFiles(root.url, datasets["interactions"], datasets["items"], datasets["users"])
    if validate_files:
        _validate(group)
    increment.group = group
    return increment, base


def _read_new(root: Location, dataset_type: str, plan: ImportPlan, schema: dict | None) -> Dataset | None:
    files = plan.new.get(dataset_type) or []
    dataset = read_files(root, dataset_type, files)
    if dataset is None or schema is None:
        return dataset
    for part in dataset.files():
        if set(part.column_names) != set(schema["columns"]):
            raise InputError(
                f"{part.source}: columns {', '.join(part.column_names)} differ from the {dataset_type} already "
                f"imported ({', '.join(schema['columns'])}); a new file must have the same columns"
            )
        part.schema = _base_schema(dataset_type, schema, part.source)
    dataset.schema = _base_schema(dataset_type, schema, dataset.source)
    return dataset


def _base_schema(dataset_type: str, schema: dict, source: str) -> Schema:
    parsed = parse_avro(dataset_type, schema["avro"], source)
    return parsed if schema.get("from_file") else Schema(parsed.dataset_type, parsed.fields, from_file=False)


def _validate(group: DatasetFiles) -> None:
    report = validate_increment(Increment("", ImportPlan(), group))
    if not report.success:
        first = report.failures[0].message()
        more = f" (and {len(report.failures) - 1} more)" if len(report.failures) > 1 else ""
        raise InputError(f"validation of new file failed: {first}{more}")


# --- featurization of an increment -----------------------------------------------------------


def extend_features(base: Features, group: DatasetFiles, options: FeaturizeOptions) -> Features:
    """``base`` (a stored featurized dataset) with the new files of ``group`` added."""
    start = time.perf_counter()
    items_df = _dedupe(group.items.typed(), "ITEM_ID") if group.items is not None else None
    users_df = _dedupe(group.users.typed(), "USER_ID") if group.users is not None else None
    new_frame, new_events, encoded = None, None, None
    if group.interactions is not None:
        dataset = group.interactions
        context_fields = [f for f in dataset.schema.metadata_fields if f.name in dataset.column_names]
        # the new rows get the base's columns: impression lists exactly when the base has them
        options = dataclasses.replace(options, impressions="impression" in base.interactions.columns)
        encoded, _counts = _encode_interactions(dataset, options, context_fields, None)
    item_ids = _extend_ids(base.item_ids, _item_parts(encoded, items_df))
    user_ids = _extend_ids(base.user_ids, _user_parts(encoded, users_df))
    info = dict(base.info)
    info["vocabularies"] = dict(base.info.get("vocabularies", {}))
    info["numeric_stats"] = dict(base.info.get("numeric_stats", {}))
    if encoded is not None and group.interactions is not None:
        new_frame, new_events = _new_interactions(base, encoded, item_ids, user_ids, group.interactions, info)
    interactions = _sorted_frame(_concat(base.interactions, new_frame)) if new_frame is not None else base.interactions
    events = base.events
    if base.events is not None and new_events is not None:
        events = _sorted_frame(_concat(base.events, new_events))
    items = _upsert_metadata(base.items, "ITEM_ID", item_ids, items_df, group.items, "items", info)
    users = _upsert_metadata(base.users, "USER_ID", user_ids, users_df, group.users, "users", info)
    info["imports"] = {
        t: list(base.info.get("imports", {}).get(t, [])) + (new.imports() if (new := group.get(t)) is not None else [])
        for t in DATASET_TYPES
    }
    info["imports"] = {t: v for t, v in info["imports"].items() if v}
    counts = dict(base.info.get("counts", {}))
    counts.update(
        interactions=len(interactions),
        users=len(user_ids),
        items=len(item_ids),
        users_with_interactions=int((np.bincount(interactions["user"], minlength=len(user_ids)) > 0).sum()),
        items_with_interactions=int((np.bincount(interactions["item"], minlength=len(item_ids)) > 0).sum()),
        new_interactions=0 if new_frame is None else len(new_frame),
        new_items=len(item_ids) - base.n_items,
        new_users=len(user_ids) - base.n_users,
    )
    info["counts"] = counts
    info["seconds"] = round(time.perf_counter() - start, 3)
    return Features(item_ids, user_ids, interactions, items, users, info, events)


def _item_parts(encoded: dict | None, items_df: pd.DataFrame | None) -> list:
    parts = list(encoded["ITEM_ID"].dictionaries) if encoded is not None else []
    if encoded is not None and "IMPRESSION" in encoded:
        parts += encoded["IMPRESSION"].dictionaries
    if items_df is not None:
        parts.append(pa.array(items_df["ITEM_ID"].to_numpy(dtype=object), type=pa.string()))
    return parts


def _user_parts(encoded: dict | None, users_df: pd.DataFrame | None) -> list:
    parts = list(encoded["USER_ID"].dictionaries) if encoded is not None else []
    if users_df is not None:
        parts.append(pa.array(users_df["USER_ID"].to_numpy(dtype=object), type=pa.string()))
    return parts


def _extend_ids(known: np.ndarray, parts: list) -> np.ndarray:
    """Known ids keep their codes; ids not seen before are appended in sorted order."""
    found = _sorted_unique(parts).to_numpy(zero_copy_only=False).astype(object)
    new = found[pd.Index(known).get_indexer(pd.Index(found)) < 0] if len(found) else found
    return np.concatenate([np.asarray(known, dtype=object), new]) if len(new) else known


def _new_interactions(
    base: Features, encoded: dict, item_ids, user_ids, dataset: Dataset, info: dict
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The new interactions as columns like the base's, and every new event for filters."""
    item_dictionary = pa.array(item_ids, type=pa.string())
    user_dictionary = pa.array(user_ids, type=pa.string())
    kept = encoded.pop("kept")
    keep = kept is not None
    data: dict[str, Any] = {
        "user": encoded["USER_ID"].codes(user_dictionary, rows=kept, keep=keep),
        "item": encoded["ITEM_ID"].codes(item_dictionary, rows=kept, keep=keep),
        "timestamp": encoded.pop("TIMESTAMP"),
    }
    columns = base.interactions.columns
    if "event_type" in columns:
        data["event_type"] = _categorical_like(base.interactions["event_type"], encoded.pop("EVENT_TYPE"))
    if "event_value" in columns:
        data["event_value"] = encoded.pop("EVENT_VALUE")
    if "recommendation_id" in columns:
        data["recommendation_id"] = encoded.pop("RECOMMENDATION_ID")
    if "impression" in columns:
        lists = encoded.pop("IMPRESSION").lists(item_dictionary)
        data["impression"] = pd.Series(lists, dtype=pd.ArrowDtype(lists.type))
    for f in [f for f in dataset.schema.metadata_fields if f"ctx_{f.name}" in columns]:
        column = encoded.pop(f.name)
        if f.is_numeric:
            data[f"ctx_{f.name}"] = column
            continue
        key = f"interactions.{f.name}"
        vocab = list(info["vocabularies"].get(key, []))
        added = [v for v in _sorted_unique(column.dictionaries).to_pylist() if v not in set(vocab)]
        info["vocabularies"][key] = vocab + added
        data[f"ctx_{f.name}"] = column.codes(pa.array(vocab + added, type=pa.string()), missing=-1) + 1
    events = None
    if keep:
        events = pd.DataFrame(
            {
                "user": encoded["USER_ID"].codes(user_dictionary),
                "item": encoded["ITEM_ID"].codes(item_dictionary),
                "timestamp": encoded.pop("ALL_TIMESTAMP"),
                "event_type": _categorical_like(base.events["event_type"], encoded.pop("ALL_EVENT_TYPE"))
                if base.events is not None
                else None,
            }
        )
    return pd.DataFrame(data, copy=False), events


def _categorical_like(existing: pd.Series, column) -> pd.Categorical:
    """The new values as a categorical whose categories extend the existing ones."""
    values = column.categorical()
    categories = list(pd.Categorical(existing).categories)
    extra = [c for c in values.categories if c not in set(categories)]
    return pd.Categorical(np.asarray(values, dtype=object), categories=categories + extra)


def _concat(old: pd.DataFrame, new: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in old.columns:
        if name not in new.columns:
            raise InputError(f"the new interactions have no column for {name} (every import has the same columns)")
        a, b = old[name], new[name]
        if isinstance(a.dtype, pd.CategoricalDtype):
            categories = list(a.cat.categories) + [
                c for c in pd.Categorical(b).categories if c not in set(a.cat.categories)
            ]
            a, b = a.cat.set_categories(categories), pd.Series(pd.Categorical(b, categories=categories))
            out[name] = pd.Categorical.from_codes(np.concatenate([a.cat.codes, b.cat.codes]), categories=categories)
        elif isinstance(a.dtype, pd.ArrowDtype):
            chunks = [*_chunks(a), *_chunks(b)]
            out[name] = pd.Series(pa.chunked_array(chunks, type=a.dtype.pyarrow_dtype), dtype=a.dtype)
        else:
            out[name] = np.concatenate([a.to_numpy(), np.asarray(b, dtype=a.dtype)])
    return out


def _chunks(values) -> list[pa.Array]:
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.ArrowDtype):
        return list(values.array._pa_array.chunks)
    arrow = pa.array(values) if not isinstance(values, (pa.Array, pa.ChunkedArray)) else values
    return list(arrow.chunks) if isinstance(arrow, pa.ChunkedArray) else [arrow]


def _upsert_metadata(
    base: pd.DataFrame,
    id_column: str,
    ids: np.ndarray,
    new_rows: pd.DataFrame | None,
    dataset: Dataset | None,
    kind: str,
    info: dict,
) -> pd.DataFrame:
    """The metadata frame over the extended ids: new rows upsert by id and the whole frame
    is re-encoded from the raw values; without new rows, new ids get empty metadata."""
    if new_rows is None or dataset is None:
        out = base.set_index(id_column).reindex(ids)
        for col in out.columns:
            if col.startswith("num_"):
                out[col] = out[col].fillna(0.0).astype(np.float32)
        return out.rename_axis(id_column).reset_index()
    raw = pd.DataFrame({id_column: base[id_column].to_numpy(dtype=object)})
    for col in base.columns:
        if col.startswith("raw_"):
            raw[col[4:]] = base[col].to_numpy()
    if "creation_timestamp" in base.columns:
        raw["CREATION_TIMESTAMP"] = base["creation_timestamp"].to_numpy()
    merged = pd.concat([raw, new_rows], ignore_index=True)
    merged = merged.drop_duplicates(subset=[id_column], keep="last").set_index(id_column).reindex(ids)
    out = pd.DataFrame({id_column: ids})
    if "CREATION_TIMESTAMP" in merged.columns:
        out["creation_timestamp"] = pd.to_numeric(merged["CREATION_TIMESTAMP"], errors="coerce").to_numpy(
            dtype=np.float64
        )
    for key in [k for k in list(info["vocabularies"]) if k.startswith(kind + ".")]:
        del info["vocabularies"][key]
    _encode_metadata(out, merged, dataset.schema.metadata_fields, kind, info["vocabularies"], info["numeric_stats"])
    return out


def save_increment(increment: Increment, location: str | Location) -> Location:
    """Snapshot the new files, one folder per file, and the plan (``increment.json``,
    written last), so that another step or machine can validate and featurize them."""
    from .datasets import save_snapshot

    loc = as_location(location)
    files: list[dict[str, Any]] = []
    if increment.group is not None:
        for dataset in increment.group.datasets():
            for part in dataset.files():
                name = f"{len(files):04d}"
                save_snapshot(part, loc.child(name))
                files.append(
                    {"dataset_type": part.dataset_type, "folder": name, "path": part.path, "rows": part.num_rows}
                )
    loc.child("increment.json").write_json(
        {
            "base_version": increment.base_version,
            "files": files,
            "redelivered": increment.plan.redelivered,
            "notes": increment.notes,
        }
    )
    return loc


def load_increment(location: str | Location) -> Increment:
    """An increment saved by ``save_increment`` (its new files as datasets)."""
    from .datasets import combine_parts, load_snapshot

    loc = as_location(location)
    record = loc.child("increment.json").read_json()
    plan = ImportPlan(new={t: [] for t in DATASET_TYPES}, redelivered=[tuple(p) for p in record["redelivered"]])
    parts: dict[str, list[Dataset]] = {t: [] for t in DATASET_TYPES}
    for entry in record["files"]:
        part = load_snapshot(loc.child(entry["folder"]))
        parts[entry["dataset_type"]].append(part)
        plan.new[entry["dataset_type"]].append(DataFile(entry["dataset_type"], entry["path"], part.signature))
    datasets = {t: (ps[0] if len(ps) == 1 else combine_parts(ps, loc.url)) if ps else None for t, ps in parts.items()}
    group = None
    if any(d is not None for d in datasets.values()):
        group = DatasetFiles(loc.url, datasets["interactions"], datasets["items"], datasets["users"])
    return Increment(record["base_version"], plan, group, list(record.get("notes", [])))


def validate_increment(increment: Increment):
    """The Great Expectations report of the new files, file by file (a ValidationReport)."""
    from .validation import validate_datasets

    parts = [part for d in increment.group.datasets() for part in d.files()] if increment.group is not None else []
    return validate_datasets(parts, increment.group.location if increment.group is not None else "", scope="file")


def update_features(
    dataset: str | Location,
    solution: str | Location,
    options: FeaturizeOptions,
    validate_files: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[Features, Increment]:
    """The featurized dataset of an UPDATE: the latest version's stored one plus the new
    files (the stored one as it is when nothing is new)."""
    log = log or (lambda _msg: None)
    t = time.perf_counter()
    increment, base = read_increment(dataset, solution, validate_files)
    for note in increment.notes:
        log(note)
    if increment.group is None:
        log(
            f"no new files since solution version {increment.base_version}: the UPDATE refreshes the model on the "
            "data it has"
        )
        return load_features(base.child("features")), increment
    log(
        f"read and validated {len(increment.plan.new_files)} new file(s) in {time.perf_counter() - t:.1f}s: "
        f"{', '.join(increment.plan.new_files)}"
    )
    t = time.perf_counter()
    stored = load_features(base.child("features"))
    features = extend_features(stored, increment.group, options)
    log(
        f"featurized the increment in {time.perf_counter() - t:.1f}s: "
        f"{features.info['counts']['new_interactions']} new interactions, "
        f"{features.info['counts']['new_items']} new items, {features.info['counts']['new_users']} new users"
    )
    return features, increment


__all__ = [
    "Increment",
    "read_increment",
    "extend_features",
    "update_features",
    "save_increment",
    "load_increment",
    "validate_increment",
]
