"""Inputs of the scheduled batch inference jobs: a JSONL file, every ``*.jsonl`` of a folder
or S3 prefix (each becomes its own ``.out``), or, when none is configured, a job input
naming everything the solution version knows (every user; every item for RELATED_ITEMS)."""

from __future__ import annotations

import json

from .errors import InputError
from .locations import Location, as_location
from .store import SolutionVersion


def job_input_files(location: str | Location) -> list[Location]:
    """``location`` itself when it is a file; the ``*.jsonl`` files directly in it (sorted by
    name) when it is a folder or S3 prefix. Nothing to read is an error naming the location."""
    loc = as_location(location)
    if not loc.exists():
        raise InputError(
            f"{loc.url}: batch inference input does not exist (a JSONL file, or a folder / S3 prefix of *.jsonl files)"
        )
    if not loc.is_dir():
        return [loc]
    files = [loc.child(name) for name in loc.listdir() if name.endswith(".jsonl")]
    if not files:
        raise InputError(f"{loc.url}: batch inference input folder has no *.jsonl file")
    return files


def write_default_input(version: SolutionVersion, location: str | Location) -> Location:
    """A job input naming every user (USER_PERSONALIZATION) or every item (RELATED_ITEMS)
    known to the solution version. PERSONALIZED_RANKING needs the items to rank, so a
    configured input is required there."""
    loc = as_location(location)
    if version.recipe_type == "RELATED_ITEMS":
        text = "".join(json.dumps({"itemId": str(i)}) + "\n" for i in version.item_ids)
    elif version.recipe_type == "USER_PERSONALIZATION":
        text = "".join(json.dumps({"userId": str(u)}) + "\n" for u in version.user_ids)
    else:
        raise InputError(
            f"{version.manifest['recipe']} ranks the items each input line lists: set batch_inference.input to a "
            'JSONL file (or folder) of {"userId": ..., "itemList": [...]} lines'
        )
    loc.write_text(text)
    return loc


__all__ = ["job_input_files", "write_default_input"]
