"""Data deletion (Personalize's data deletion job): remove users' rows from a dataset group.

``delete_users(dataset, user_ids)`` removes every row of those users from every file of
the interactions and users datasets, local or on S3, in two phases:

1. *prepare*: each file is streamed (Arrow slices, all columns as strings for CSV, the
   file's own column types for Parquet), the users' rows dropped, and the rest written
   to a hidden staging name next to it (``.NAME.deleting-TOKEN``). Files without such
   rows are not touched (their bytes stay, so they stay "already imported"). Any error
   here removes the staged files: the dataset is unchanged.
2. *commit*: each staged file replaces its original (a rename locally; copy + delete on
   S3). Only then is the record written.

A run that dies during the commit leaves some files cleaned and others not; running the
same deletion again finishes it (a file with no rows left to delete is skipped). A
changed file makes the next UPDATE refuse and the next FULL use everything (the dataset
contract), so derived data — features, solution versions, batch outputs — loses the users
with the next FULL.

The record, ``<dataset>/deletions/<time>-<token>.json``, says when, how many users were
asked for, and how many rows were removed from which file; the users appear only as
salted SHA-256 hashes (``sha256(salt + USER_ID)``, salt in the record), so a given id can
be checked against it but the ids cannot be read from it.

``versions_holding(solution, user_ids)`` lists the solution versions whose user
catalogue still names any of the users; ``remove_versions`` deletes them (index first,
then folders; ``latest`` / ``latest_full`` move to the newest remaining version).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import io
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .datasets import read_dataset, read_parquet
from .errors import InputError
from .imports import list_files
from .locations import Location, as_location, s3_errors

DATASETS_WITH_USERS = ("interactions", "users")
RECORDS = "deletions"


def dataset_files(root: Location, dataset_type: str) -> list[Location]:
    """Every file of a dataset in read order (``imports.list_files``: the single
    ``interactions.csv`` or every data file under ``interactions/``, partitions too)."""
    return [f.location(root) for f in list_files(root)[dataset_type]]


FileLister = Callable[[Location, str], list[Location]]


@dataclass
class FileDeletion:
    file: Location
    rows: int
    deleted: int
    staged: Location | None = None


def read_user_ids(location: str | Location) -> np.ndarray:
    """The USER_ID column of a CSV file (header ``USER_ID``), as distinct strings."""
    loc = as_location(location)
    if not loc.exists() or loc.is_dir():
        raise InputError(f"{loc.url}: users file does not exist (a CSV file with the header USER_ID)")
    data = loc.read_bytes()
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            convert_options=pacsv.ConvertOptions(
                column_types={"USER_ID": pa.string()}, strings_can_be_null=True, null_values=[""]
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(f"{loc.url}: not a readable CSV file ({str(exc).splitlines()[0]})") from None
    if "USER_ID" not in table.column_names:
        raise InputError(f"{loc.url}: no USER_ID column (the header must name USER_ID)")
    ids = pc.unique(pc.drop_null(table.column("USER_ID").cast(pa.string())))
    if len(ids) == 0:
        raise InputError(f"{loc.url}: no user ids to delete")
    return ids.to_numpy(zero_copy_only=False).astype(object)


def hash_ids(ids: Iterable[str], salt: str) -> list[str]:
    return sorted(hashlib.sha256((salt + str(i)).encode("utf-8")).hexdigest() for i in ids)


def delete_users(
    dataset: str | Location, user_ids: np.ndarray, lister: FileLister = dataset_files, now: dt.datetime | None = None
) -> dict:
    """Remove the users' rows from the interactions and users datasets; return the record."""
    root = as_location(dataset)
    if not root.is_dir():
        raise InputError(f"{root.url}: dataset location does not exist or is not a folder")
    files = [(t, f) for t in DATASETS_WITH_USERS for f in lister(root, t)]
    if not any(t == "interactions" for t, _ in files):
        raise InputError(f"{root.url}: no interactions dataset here")
    wanted = pa.array(np.asarray(user_ids, dtype=object), type=pa.string())
    token = uuid.uuid4().hex[:12]
    plans: list[tuple[str, FileDeletion]] = []
    try:
        for dataset_type, file in files:  # phase 1: stage the cleaned files
            plans.append((dataset_type, _stage(file, dataset_type, wanted, token)))
    except BaseException:
        for _, plan in plans:
            if plan.staged is not None:
                with contextlib.suppress(Exception):
                    plan.staged.remove()
        raise
    for _, plan in plans:  # phase 2: commit
        if plan.staged is not None:
            _replace(plan.staged, plan.file)
    now = now or dt.datetime.now(dt.UTC)
    salt = uuid.uuid4().hex
    record = {
        "deleted_at": now.isoformat(timespec="seconds"),
        "dataset": root.url,
        "users_requested": int(len(wanted)),
        "rows_deleted": {t: sum(p.deleted for d, p in plans if d == t) for t in DATASETS_WITH_USERS},
        "files": [
            {"file": p.file.url, "dataset": d, "rows_before": p.rows, "rows_deleted": p.deleted} for d, p in plans
        ],
        "user_id_hashes": {
            "algorithm": "sha256(salt + USER_ID)",
            "salt": salt,
            "hashes": hash_ids(wanted.to_pylist(), salt),
        },
    }
    name = now.strftime("%Y%m%dT%H%M%SZ") + f"-{token}.json"
    root.child(RECORDS, name).write_json(record)
    record["record"] = root.child(RECORDS, name).url
    return record


def _stage(file: Location, dataset_type: str, wanted: pa.Array, token: str) -> FileDeletion:
    """Write ``file`` without the users' rows to a staging name (None when none are there)."""
    staged = file.parent().child(f".{file.name}.deleting-{token}")
    if file.url.endswith(".parquet"):
        return _stage_parquet(file, staged, wanted)
    dataset = read_dataset(file, dataset_type)  # every column a string: ids stay exact
    if "USER_ID" not in dataset.column_names:
        raise InputError(f"{file.url}: no USER_ID column")
    rows = deleted = 0
    for part in dataset.slices():
        rows += part.num_rows
        deleted += int(pc.sum(pc.is_in(part["USER_ID"], value_set=wanted)).as_py() or 0)
    if deleted == 0:
        return FileDeletion(file, rows, 0)
    with staged.atomic_writer() as raw:
        binary = gzip.GzipFile(fileobj=raw, mode="wb") if file.url.endswith(".gz") else raw
        text = io.TextIOWrapper(binary, encoding="utf-8", newline="")
        for i, part in enumerate(dataset.slices()):  # minimal quoting, as the files usually come
            kept = part.filter(pc.invert(pc.is_in(part["USER_ID"], value_set=wanted)))
            kept.to_pandas().to_csv(text, index=False, header=i == 0, lineterminator="\n", na_rep="")
        text.flush()
        text.detach()
        if binary is not raw:
            binary.close()
    return FileDeletion(file, rows, deleted, staged)


def _stage_parquet(file: Location, staged: Location, wanted: pa.Array) -> FileDeletion:
    with file.open("rb") as fh:
        table = read_parquet(file.url, fh)
    if "USER_ID" not in table.column_names:
        raise InputError(f"{file.url}: no USER_ID column")
    hit = pc.is_in(pc.cast(table["USER_ID"], pa.string()), value_set=wanted)
    deleted = int(pc.sum(hit).as_py() or 0)
    if deleted == 0:
        return FileDeletion(file, table.num_rows, 0)
    with staged.atomic_writer() as fh:
        pq.write_table(table.filter(pc.invert(hit)), fh, compression="zstd")
    return FileDeletion(file, table.num_rows, deleted, staged)


def _replace(staged: Location, target: Location) -> None:
    if target.is_s3:
        with s3_errors(target):
            staged.fs.copy(staged.path, target.path)
            staged.fs.rm(staged.path)
    else:
        os.replace(staged.path, target.path)


# --- solution versions ---------------------------------------------------------------------------
def versions_holding(solution: str | Location, user_ids: np.ndarray) -> list[str]:
    """Ids of the solution's versions whose user catalogue names any of the users."""
    from .store import INDEX, read_index

    root = as_location(solution)
    index = read_index(root)
    if index is None:
        raise InputError(f"{root.url}: not a solution (no {INDEX})")
    wanted = pa.array(np.asarray(user_ids, dtype=object), type=pa.string())
    holding = []
    for entry in index.get("versions", []):
        users = root.child("versions", entry["id"], "users.parquet")
        if not users.exists():
            continue
        with users.open("rb") as fh:
            ids = pq.read_table(fh, columns=["USER_ID"])["USER_ID"]
        if pc.any(pc.is_in(pc.cast(ids, pa.string()), value_set=wanted)).as_py():
            holding.append(entry["id"])
    return holding


def remove_versions(solution: str | Location, version_ids: list[str]) -> list[str]:
    """Delete these versions: the index stops naming them first (``latest`` and
    ``latest_full`` move to the newest remaining ones), then their folders go."""
    from .store import INDEX, read_index

    root = as_location(solution)
    index = read_index(root) or {"versions": []}
    drop = set(version_ids)
    index["versions"] = [v for v in index.get("versions", []) if v["id"] not in drop]
    remaining = index["versions"]
    index["latest"] = remaining[-1]["id"] if remaining else None
    fulls = [v["id"] for v in remaining if v.get("training_mode", "FULL") == "FULL"]
    index["latest_full"] = fulls[-1] if fulls else None
    root.child(INDEX).write_json(index)
    for version_id in version_ids:
        root.child("versions", version_id).remove(recursive=True)
    return list(version_ids)


__all__ = ["delete_users", "dataset_files", "read_user_ids", "versions_holding", "remove_versions", "hash_ids"]
