"""The files of a dataset group and what each solution version imported from them.

A dataset is either one file (``interactions.csv``, ``.csv.gz`` or ``.parquet``) or a folder
(``interactions/``) of any number of such files, also in ``key=value/`` partition folders,
read in sorted path order. Files and folders whose name starts with ``.`` or ``_`` are not
data (temporary uploads, ``_SUCCESS`` markers) and are ignored.

Every file is one import. A solution version records its imports (path, content
fingerprint, listing signature, rows) in its manifest; against that record
``plan_increment`` sorts the files of the location into

- *new* files: an INCREMENTAL import (interactions append; items and users upsert by id);
- *re-delivered* files: the same bytes as a file already imported, under another name
  (at-least-once delivery): skipped, with a warning;
- and refuses with one line when a recorded file was changed or removed, which is a FULL
  import ("run FULL").

Only a listing is read, plus the bytes of files whose listing signature is new.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError
from .locations import Location
from .schemas import DATASET_TYPES

SUFFIXES = (".csv", ".csv.gz", ".parquet")
HASH_BLOCK = 1 << 24


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset: its path relative to the dataset group and its listing
    signature (size and ETag / modification time)."""

    dataset_type: str
    path: str
    signature: str

    def location(self, root: Location) -> Location:
        return root.child(*self.path.split("/"))


def _is_data(path: str) -> bool:
    return path.endswith(SUFFIXES) and not any(part.startswith((".", "_")) for part in path.split("/"))


def list_files(root: Location, listing: dict[str, str] | None = None) -> dict[str, list[DataFile]]:
    """``{dataset type: its files in import order}`` (empty lists for absent datasets).
    A dataset given both as a file and as a folder, or as two files, is an error."""
    listing = root.files() if listing is None else listing
    out: dict[str, list[DataFile]] = {}
    for dataset_type in DATASET_TYPES:
        singles = [dataset_type + s for s in SUFFIXES if dataset_type + s in listing]
        folder = [p for p in listing if p.startswith(dataset_type + "/") and _is_data(p[len(dataset_type) + 1 :])]
        if len(singles) > 1:
            raise InputError(f"{root.url}: both {singles[0]} and {singles[1]} exist; keep one {dataset_type} file")
        if singles and folder:
            raise InputError(
                f"{root.url}: both {singles[0]} and the folder {dataset_type}/ exist; keep one (move {singles[0]} "
                "into the folder)"
            )
        out[dataset_type] = [DataFile(dataset_type, p, listing[p]) for p in singles + sorted(folder)]
    return out


def file_fingerprint(location: Location) -> str:
    """sha256 of a file's bytes (first 16 hex digits), read in blocks."""
    digest = hashlib.sha256()
    with location.open("rb") as fh:
        while block := fh.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()[:16]


@dataclass
class ImportPlan:
    """What an UPDATE imports: new files per dataset type (with their fingerprints), and the
    re-delivered files it skips (path, path of the identical file already imported)."""

    new: dict[str, list[DataFile]] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)  # path -> fingerprint of each new file
    redelivered: list[tuple[str, str]] = field(default_factory=list)

    @property
    def new_files(self) -> list[str]:
        return [f.path for files in self.new.values() for f in files]

    def warnings(self) -> list[str]:
        return [
            f"warning: {path} has the same bytes as {twin}, already imported: skipped (re-delivered file)"
            for path, twin in self.redelivered
        ]


def plan_increment(root: Location, recorded: dict[str, list[dict[str, Any]]], version_id: str) -> ImportPlan:
    """Sort the files under ``root`` against the imports ``recorded`` by solution version
    ``version_id`` (see the module docstring); raises InputError ("run FULL") when a
    recorded file changed or is gone."""
    current = list_files(root)
    by_path = {f.path: f for files in current.values() for f in files}
    known: dict[str, str] = {}
    for dataset_type, entries in recorded.items():
        for entry in entries:
            path = entry["path"]
            now = by_path.get(path)
            if now is None or now.dataset_type != dataset_type:
                raise InputError(
                    f"{root.url}: {path} was imported by solution version {version_id} and is gone: a removed file "
                    "is a FULL import; run FULL"
                )
            if now.signature != entry.get("signature") and file_fingerprint(now.location(root)) != entry["fingerprint"]:
                raise InputError(
                    f"{root.url}: {path} changed since solution version {version_id} imported it: a changed file is "
                    "a FULL import; run FULL"
                )
            known.setdefault(entry["fingerprint"], path)
    plan = ImportPlan(new={t: [] for t in DATASET_TYPES})
    imported = {entry["path"] for entries in recorded.values() for entry in entries}
    for dataset_type, files in current.items():
        for f in files:
            if f.path in imported:
                continue
            fingerprint = file_fingerprint(f.location(root))
            if fingerprint in known:
                plan.redelivered.append((f.path, known[fingerprint]))
                continue
            known[fingerprint] = f.path
            plan.new[dataset_type].append(f)
            plan.fingerprints[f.path] = fingerprint
    return plan


__all__ = ["SUFFIXES", "DataFile", "list_files", "file_fingerprint", "ImportPlan", "plan_increment"]
