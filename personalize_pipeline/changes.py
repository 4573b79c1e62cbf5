"""What changed in a dataset location: since a sensor last looked, or since the latest
solution version was trained.

Both questions are answered from a listing (size and ETag on S3, size and modification
time locally, see ``Location.signature``), so a two-hourly check reads no data. Only when a
file's signature differs from the one recorded with the solution version is the file read
and its content fingerprint compared, so a file re-uploaded unchanged is not new data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .datasets import SUFFIXES
from .errors import InputError
from .locations import Location, as_location
from .schemas import DATASET_TYPES
from .store import INDEX, MANIFEST, read_index


def dataset_files(root: str | Location) -> dict[str, str]:
    """``{file name: signature}`` of the dataset files (interactions / items / users, any
    supported suffix) directly under ``root``; empty when the location does not exist."""
    root = as_location(root)
    if not root.is_dir():
        return {}
    names = {n for n in root.listdir() if any(n == t + s for t in DATASET_TYPES for s in SUFFIXES)}
    return {n: root.child(n).signature() for n in sorted(names)}


def changed_files(current: dict[str, str], seen: dict[str, str]) -> list[str]:
    """Names of files that are new or whose signature changed since ``seen``."""
    return sorted(n for n, sig in current.items() if seen.get(n) != sig)


def digest(files: dict[str, str]) -> str:
    """A short stable id of a set of file signatures (for run keys and data versions)."""
    return hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()[:16]


def _dataset_type(name: str) -> str:
    return next(t for t in DATASET_TYPES if name.startswith(t + "."))


@dataclass(frozen=True)
class UpdateCheck:
    """Whether an UPDATE has something to do, and why (a sentence for logs and skip reasons)."""

    needed: bool
    reason: str
    latest_version: str | None = None
    changed: tuple[str, ...] = ()


def update_check(dataset: str | Location, solution: str | Location) -> UpdateCheck:
    """An UPDATE is needed when the solution has a FULL version and the dataset holds data
    its latest version was not trained on."""
    dataset, solution = as_location(dataset), as_location(solution)
    index = read_index(solution)
    if not index or not index.get("latest_full"):
        return UpdateCheck(False, f"no FULL solution version in {solution.url} yet: run the FULL retrain first")
    latest = index["latest"]
    manifest = solution.child("versions", latest, MANIFEST).read_json()
    recorded = manifest.get("dataset", {})
    files = dataset_files(dataset)
    if not any(n.startswith("interactions.") for n in files):
        raise InputError(f"{dataset.url}: no interactions file found")
    changed = []
    seen_types = set()
    for name, signature in files.items():
        dataset_type = _dataset_type(name)
        seen_types.add(dataset_type)
        before = recorded.get("files", {}).get(dataset_type, {})
        if before.get("signature") == signature and before.get("source", "").endswith("/" + name):
            continue
        content = hashlib.sha256(dataset.child(name).read_bytes()).hexdigest()[:16]
        if content != recorded.get("fingerprints", {}).get(dataset_type):
            changed.append(name)
    changed += [f"{t} (removed)" for t in recorded.get("fingerprints", {}) if t not in seen_types]
    if not changed:
        return UpdateCheck(False, f"no new data since solution version {latest} ({INDEX} in {solution.url})", latest)
    return UpdateCheck(True, f"new data since solution version {latest}: {', '.join(changed)}", latest, tuple(changed))


__all__ = ["dataset_files", "changed_files", "digest", "update_check", "UpdateCheck"]
