"""What changed in a dataset location: since a sensor last looked, or since the latest
solution version imported it.

Both questions are answered from a listing (size and ETag on S3, size and modification
time locally, see ``Location.signature``), so a two-hourly check reads no data. Only files
whose signature the solution version has not recorded are read, to compare their content
fingerprints (``imports.plan_increment``): a file re-uploaded unchanged, or the same bytes
delivered again under another name, is not new data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .errors import InputError
from .imports import list_files, plan_increment
from .locations import Location, as_location
from .store import INDEX, MANIFEST, read_index


def dataset_files(root: str | Location) -> dict[str, str]:
    """``{path: signature}`` of the dataset files (interactions / items / users, single
    files or folders of files) under ``root``; empty when the location does not exist."""
    root = as_location(root)
    if not root.is_dir():
        return {}
    return {f.path: f.signature for files in list_files(root).values() for f in files}


def changed_files(current: dict[str, str], seen: dict[str, str]) -> list[str]:
    """Paths of files that are new or whose signature changed since ``seen``."""
    return sorted(n for n, sig in current.items() if seen.get(n) != sig)


def digest(files: dict[str, str]) -> str:
    """A short stable id of a set of file signatures (for run keys and data versions)."""
    return hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class UpdateCheck:
    """Whether an UPDATE has something to do, and why (a sentence for logs and skip reasons).
    ``full_needed``: an imported file changed or is gone, which only a FULL can take."""

    needed: bool
    reason: str
    latest_version: str | None = None
    changed: tuple[str, ...] = ()
    full_needed: bool = False


def update_check(dataset: str | Location, solution: str | Location) -> UpdateCheck:
    """An UPDATE is needed when the solution has a FULL version and the dataset holds new
    files that its latest version has not imported."""
    dataset, solution = as_location(dataset), as_location(solution)
    index = read_index(solution)
    if not index or not index.get("latest_full"):
        return UpdateCheck(False, f"no FULL solution version in {solution.url} yet: run the FULL retrain first")
    latest = index["latest"]
    manifest = solution.child("versions", latest, MANIFEST).read_json()
    if not list_files(dataset)["interactions"]:
        raise InputError(f"{dataset.url}: no interactions file found")
    recorded = manifest.get("dataset", {}).get("imports")
    if not recorded:
        return UpdateCheck(
            False, f"solution version {latest} records no imports (older release): run FULL", latest, full_needed=True
        )
    try:
        plan = plan_increment(dataset, recorded, latest)
    except InputError as exc:
        return UpdateCheck(False, exc.message, latest, full_needed=True)
    new = tuple(plan.new_files)
    skipped = f" (re-delivered, skipped: {', '.join(p for p, _ in plan.redelivered)})" if plan.redelivered else ""
    if not new:
        return UpdateCheck(
            False, f"no new data since solution version {latest} ({INDEX} in {solution.url}){skipped}", latest
        )
    return UpdateCheck(True, f"new data since solution version {latest}: {', '.join(new)}{skipped}", latest, new)


__all__ = ["dataset_files", "changed_files", "digest", "update_check", "UpdateCheck"]
