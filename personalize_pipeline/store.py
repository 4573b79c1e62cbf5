"""Solution-version storage, in a local folder or under an ``s3://`` prefix.

A *solution* folder holds its versions and an index::

    SOLUTION/solution.json                   index: versions, latest, latest FULL
    SOLUTION/versions/<id>/model.npz         the recipe's learned state
    SOLUTION/versions/<id>/catalog.parquet   ITEM_ID per item code (+ CREATION_TIMESTAMP)
    SOLUTION/versions/<id>/users.parquet     USER_ID per user code
    SOLUTION/versions/<id>/history.npz       each user's time-ordered item codes (CSR; with the
                                             events' times where the recipe reads them)
    SOLUTION/versions/<id>/events.npz        every imported event (CSR, with event types) when
                                             event filters left some out of training: filters read it
    SOLUTION/versions/<id>/features/         the featurized dataset the version was trained on
                                             (every user's events; an UPDATE adds new files to it)
    SOLUTION/versions/<id>/manifest.json     written last: recipe, hyperparameters, solution
                                             config, training mode, dataset fingerprint,
                                             timings, metrics

Every file is written atomically and the manifest last, then the index is replaced, so a
failed or killed training never changes what readers see: an interrupted version has no
manifest and is ignored, and earlier versions stay intact.

Retention (``keep_full``): after a new version is in place, only the newest N FULL
versions and the UPDATE versions built on them are kept. The index is rewritten first,
then the dropped folders are deleted, and the versions ``latest`` / ``latest_full`` name
are never among them, so a reader never finds the index naming a missing version.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import uuid
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from . import __version__
from .errors import InputError
from .features import Features, save_features
from .locations import Location, as_location
from .recipes import Recipe, UserBatch, get_recipe

MANIFEST = "manifest.json"
INDEX = "solution.json"
FORMAT = 1


@dataclass
class SolutionVersion:
    location: Location
    manifest: dict[str, Any]
    recipe: Recipe
    item_ids: np.ndarray
    user_ids: np.ndarray
    history_indptr: np.ndarray
    history_items: np.ndarray
    item_creation: np.ndarray | None = None
    history_context: np.ndarray | None = None
    history_event_types: np.ndarray | None = None  # str per history event
    # [n_events, 2] event-type code (-1 = none) and timestamp per history event (None: a
    # version saved before they were)
    history_signals: np.ndarray | None = None
    items_metadata: pd.DataFrame | None = None  # raw Items fields per item code
    users_metadata: pd.DataFrame | None = None  # raw Users fields per user code
    # every imported event (indptr, items, event types) when event filters left some out of
    # the model's histories; None: the histories hold every event
    all_events: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None

    def filter_history(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Per-user CSR of every imported event and their event types, as filters see them."""
        if self.all_events is not None:
            return self.all_events
        return self.history_indptr, self.history_items, self.history_event_types

    @property
    def version_id(self) -> str:
        return self.manifest["solution_version"]

    @property
    def recipe_type(self) -> str:
        return self.manifest["recipe_type"]

    def user_codes(self, user_ids: np.ndarray) -> np.ndarray:
        return pd.Index(self.user_ids).get_indexer(pd.Index(np.asarray(user_ids, dtype=object)))

    def item_codes(self, item_ids: np.ndarray) -> np.ndarray:
        return pd.Index(self.item_ids).get_indexer(pd.Index(np.asarray(item_ids, dtype=object)))

    def user_batch(self, codes: np.ndarray) -> UserBatch:
        batch = UserBatch.from_histories(
            codes, self.history_indptr, self.history_items, context=self.history_context, signals=self.history_signals
        )
        batch.stored = True  # the version's own histories: cached user states apply
        return batch


def new_version_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def _signals(event_type_codes: np.ndarray | None, times: np.ndarray) -> np.ndarray:
    """[n, 2] int64 per history event: the event-type code (-1 = none) and the timestamp."""
    kinds = np.full(len(times), -1, dtype=np.int64) if event_type_codes is None else event_type_codes
    return np.stack([np.asarray(kinds, dtype=np.int64), np.asarray(times, dtype=np.int64)], axis=1)


def _event_type_objects(interactions: pd.DataFrame) -> np.ndarray:
    """EVENT_TYPE per event as an object array (None where missing), taken from the
    categorical's codes: one array of references, no pandas object-column copies."""
    types = pd.Categorical(interactions["event_type"])
    names = np.array([*types.categories, None], dtype=object)
    return names[types.codes]  # code -1 (missing) -> the last slot, None


def save_solution_version(
    solution: str | Location,
    recipe: Recipe,
    features: Features,
    manifest: dict[str, Any],
    version_id: str | None = None,
    keep_full: int | None = None,
) -> SolutionVersion:
    """Write a trained recipe as a new version of ``solution`` and point the index at it;
    with ``keep_full``, then apply the retention (see ``prune_versions``)."""
    root = as_location(solution)
    root.makedirs()
    version_id = version_id or new_version_id()
    loc = root.child("versions", version_id)
    try:
        version = _write_version(root, loc, recipe, features, manifest, version_id)
    except BaseException:
        # a version that could not be written completely (disk full, S3 down) is removed;
        # the index still points at the previous version
        with contextlib.suppress(Exception):
            loc.remove(recursive=True)
        raise
    if keep_full is not None:  # retention only once the new version is safely in place
        prune_versions(root, keep_full)
    return version


def _write_version(
    root: Location, loc: Location, recipe: Recipe, features: Features, manifest: dict[str, Any], version_id: str
) -> SolutionVersion:
    loc.makedirs()
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **recipe.state())
    loc.child("model.npz").write_bytes(buf.getvalue())
    catalog = pd.DataFrame({"ITEM_ID": features.item_ids})
    if "creation_timestamp" in features.items.columns:
        catalog["CREATION_TIMESTAMP"] = features.items["creation_timestamp"].to_numpy()
    for col in [c for c in features.items.columns if c.startswith("raw_")]:
        catalog[col[4:]] = features.items[col].to_numpy()  # raw item metadata, for filters
    loc.child("catalog.parquet").write_parquet(catalog)
    users_table = pd.DataFrame({"USER_ID": features.user_ids})
    for col in [c for c in features.users.columns if c.startswith("raw_")]:
        users_table[col[4:]] = features.users[col].to_numpy()
    loc.child("users.parquet").write_parquet(users_table)
    indptr, items = features.sequences()
    context = features.context_matrix()
    buf = io.BytesIO()
    arrays = {"indptr": indptr, "items": items.astype(np.int32)}
    if recipe.reads_event_signals():  # (a repeat head reads them; 8 bytes an event)
        arrays["time"] = features.interactions["timestamp"].to_numpy(np.int64)
    if context is not None:
        arrays["context"] = context.astype(np.int32)
    if "event_type" in features.interactions.columns:
        event_types = pd.Categorical(features.interactions["event_type"])
        arrays["event_type"] = event_types.codes.astype(np.int16)
        arrays["event_type_names"] = np.array([str(c) for c in event_types.categories], dtype=str)
    np.savez(buf, allow_pickle=False, **arrays)
    loc.child("history.npz").write_bytes(buf.getvalue())
    all_events = None
    if features.events is not None:
        all_events = _event_history(features.events, features.n_users)
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **_event_arrays(features.events, all_events))
        loc.child("events.npz").write_bytes(buf.getvalue())
    save_features(features, loc.child("features"))
    full_manifest = {
        "format": FORMAT,
        "solution": manifest.get("solution") or root.name,
        "solution_version": version_id,
        "recipe": recipe.name,
        "recipe_type": recipe.recipe_type,
        "hyperparameters": recipe.params,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "code_version": __version__,
        "catalog": {"items": int(features.n_items), "users": int(features.n_users)},
        "metrics": {},
        **{k: v for k, v in manifest.items() if k != "solution"},
    }
    loc.child(MANIFEST).write_json(full_manifest)
    _update_index(root, full_manifest)
    creation = catalog["CREATION_TIMESTAMP"].to_numpy() if "CREATION_TIMESTAMP" in catalog else None
    event_types = _event_type_objects(features.interactions) if "event_type" in features.interactions.columns else None
    return SolutionVersion(
        loc,
        full_manifest,
        recipe,
        features.item_ids,
        features.user_ids,
        indptr,
        items,
        creation,
        context,
        event_types,
        _signals(arrays.get("event_type"), arrays["time"]) if "time" in arrays else None,
        catalog,
        users_table,
        all_events,
    )


def _event_history(events: pd.DataFrame, n_users: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """CSR (indptr, items, event type per event) of a frame sorted by user."""
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(events["user"].to_numpy(), minlength=n_users), out=indptr[1:])
    types = (
        events["event_type"].astype(object).where(events["event_type"].notna(), None).to_numpy()
        if "event_type" in events
        else None
    )
    return indptr, events["item"].to_numpy().astype(np.int32), types


def _event_arrays(events: pd.DataFrame, history: tuple) -> dict[str, np.ndarray]:
    arrays = {"indptr": history[0], "items": history[1]}
    if "event_type" in events:
        categorical = pd.Categorical(events["event_type"])
        arrays["event_type"] = categorical.codes.astype(np.int16)
        arrays["event_type_names"] = np.array([str(c) for c in categorical.categories], dtype=str)
    return arrays


def _event_type_names(npz) -> np.ndarray:
    """The stored event type names and None last, so that code -1 (missing) reads as None."""
    return np.array([*npz["event_type_names"].tolist(), None], dtype=object)


def _read_events(location: Location) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    if not location.exists():
        return None
    with np.load(io.BytesIO(location.read_bytes()), allow_pickle=False) as npz:
        types = None
        if "event_type" in npz.files:
            types = _event_type_names(npz)[npz["event_type"].astype(np.int64)]
        return npz["indptr"], npz["items"], types


def _update_index(root: Location, manifest: dict[str, Any]) -> None:
    index_loc = root.child(INDEX)
    index = index_loc.read_json() if index_loc.exists() else {"solution": manifest["solution"], "versions": []}
    entry = {
        "id": manifest["solution_version"],
        "training_mode": manifest.get("training_mode", "FULL"),
        "recipe": manifest["recipe"],
        "created_at": manifest["created_at"],
        "base_version": manifest.get("base_version"),
    }
    index["versions"] = [v for v in index.get("versions", []) if v["id"] != entry["id"]] + [entry]
    index["latest"] = entry["id"]
    if entry["training_mode"] == "FULL":
        index["latest_full"] = entry["id"]
    index_loc.write_json(index)


def versions_to_keep(index: dict[str, Any], keep_full: int) -> list[str]:
    """Ids kept by the retention: the newest ``keep_full`` FULL versions, the UPDATE
    versions based on them, and whatever ``latest`` and ``latest_full`` name."""
    if keep_full < 1:
        raise InputError(f"keep_full_versions must be at least 1, got {keep_full}")
    versions = index.get("versions", [])
    fulls = [v["id"] for v in versions if v.get("training_mode", "FULL") == "FULL"][-keep_full:]
    keep = set(fulls) | {index.get("latest"), index.get("latest_full")} - {None}
    while True:  # UPDATEs chain (each starts from the previous version): keep whole chains
        more = {
            v["id"] for v in versions if v.get("training_mode") == "UPDATE" and v.get("base_version") in keep
        } - keep
        if not more:
            break
        keep |= more
    # a kept UPDATE keeps the versions it was built on
    base_of = {v["id"]: v.get("base_version") for v in versions}
    for vid in list(keep):
        while base_of.get(vid) and base_of[vid] not in keep:
            vid = base_of[vid]
            keep.add(vid)
    return [v["id"] for v in versions if v["id"] in keep]


def prune_versions(solution: str | Location, keep_full: int) -> list[str]:
    """Apply the retention to a solution folder; return the ids deleted. The index stops
    naming them before their folders go."""
    root = as_location(solution)
    index = read_index(root)
    if index is None:
        return []
    keep = set(versions_to_keep(index, keep_full))
    dropped = [v["id"] for v in index.get("versions", []) if v["id"] not in keep]
    if not dropped:
        return []
    index["versions"] = [v for v in index["versions"] if v["id"] in keep]
    root.child(INDEX).write_json(index)
    for version_id in dropped:
        root.child("versions", version_id).remove(recursive=True)
    return dropped


def read_index(solution: str | Location) -> dict[str, Any] | None:
    loc = as_location(solution).child(INDEX)
    if not loc.exists():
        return None
    index = loc.read_json()
    if (
        not isinstance(index, dict)
        or not isinstance(index.get("versions", []), list)
        or not all(isinstance(v, dict) and isinstance(v.get("id"), str) for v in index.get("versions", []))
    ):
        raise InputError(f'{loc.url}: not a solution index (expected an object with a "versions" list)')
    for key in ("latest", "latest_full"):
        if index.get(key) is not None and not isinstance(index[key], str):
            raise InputError(f"{loc.url}: {key!r} must be a version id")
    return index


def read_manifest(version: Location) -> dict[str, Any]:
    """A version's manifest, checked to be a manifest."""
    loc = version.child(MANIFEST)
    manifest = loc.read_json()
    if not isinstance(manifest, dict) or not all(
        isinstance(manifest.get(k), str) for k in ("recipe", "solution_version")
    ):
        raise InputError(f'{loc.url}: not a solution version manifest (needs "recipe" and "solution_version")')
    return manifest


def resolve_version(location: str | Location, full_only: bool = False) -> Location:
    """A version folder from either a version folder or a solution folder (its latest,
    or latest FULL version)."""
    loc = as_location(location)
    if loc.child(MANIFEST).exists():
        return loc
    index = read_index(loc)
    if index is None:
        if not loc.exists():
            raise InputError(f"{loc.url}: solution does not exist")
        raise InputError(f"{loc.url}: not a solution or solution version (no {INDEX} or {MANIFEST})")
    key = "latest_full" if full_only else "latest"
    if not index.get(key):
        raise InputError(f"{loc.url}: solution has no {'FULL ' if full_only else ''}solution version yet")
    return loc.child("versions", index[key])


def load_manifest(location: str | Location) -> dict[str, Any]:
    return read_manifest(resolve_version(location))


def load_solution_version(location: str | Location, full_only: bool = False) -> SolutionVersion:
    loc = resolve_version(location, full_only=full_only)
    manifest = read_manifest(loc)
    if manifest.get("format") != FORMAT:
        raise InputError(f"{loc.url}: unsupported solution version format {manifest.get('format')!r}")
    try:
        return _load_version(loc, manifest)
    except InputError:
        raise
    except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile, pa.ArrowException) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"{loc.url}: solution version is damaged and cannot be loaded ({type(exc).__name__}: {text})"
        ) from None


def _load_version(loc: Location, manifest: dict[str, Any]) -> SolutionVersion:
    cls = get_recipe(manifest["recipe"])
    with np.load(io.BytesIO(loc.child("model.npz").read_bytes()), allow_pickle=False) as npz:
        state = {k: npz[k] for k in npz.files}
    recipe = cls.from_state(manifest["hyperparameters"], state)
    catalog = loc.child("catalog.parquet").read_parquet()
    users = loc.child("users.parquet").read_parquet()
    with np.load(io.BytesIO(loc.child("history.npz").read_bytes()), allow_pickle=False) as npz:
        indptr, items = npz["indptr"], npz["items"]
        context = npz["context"].astype(np.int64) if "context" in npz.files else None
        event_types, signals = None, None
        if "event_type" in npz.files:
            event_types = _event_type_names(npz)[npz["event_type"].astype(np.int64)]
        if "time" in npz.files:
            signals = _signals(npz["event_type"] if "event_type" in npz.files else None, npz["time"])
    creation = catalog["CREATION_TIMESTAMP"].to_numpy() if "CREATION_TIMESTAMP" in catalog else None
    return SolutionVersion(
        loc,
        manifest,
        recipe,
        catalog["ITEM_ID"].to_numpy(dtype=object),
        users["USER_ID"].to_numpy(dtype=object),
        indptr,
        items,
        creation,
        context,
        event_types,
        signals,
        catalog,
        users,
        _read_events(loc.child("events.npz")),
    )


def previous_metrics(solution: str | Location, version_id: str, protocol: str) -> tuple[str, dict[str, Any]] | None:
    """(id, metrics record) of the newest version before ``version_id`` in the solution's
    index whose manifest holds metrics of ``protocol``; None when there is none."""
    index = read_index(solution)
    if not index:
        return None
    ids = [v["id"] for v in index.get("versions", [])]
    if version_id not in ids:
        return None
    root = as_location(solution)
    for vid in reversed(ids[: ids.index(version_id)]):
        loc = root.child("versions", vid, MANIFEST)
        if not loc.exists():
            continue
        metrics = loc.read_json().get("metrics") or {}
        if metrics.get("protocol") == protocol and metrics.get("metrics"):
            return vid, metrics
    return None


def update_manifest(location: str | Location, **fields: Any) -> dict[str, Any]:
    """Merge fields (e.g. metrics) into a version's manifest, atomically."""
    loc = resolve_version(location)
    manifest = read_manifest(loc)
    manifest.update(fields)
    loc.child(MANIFEST).write_json(manifest)
    return manifest
