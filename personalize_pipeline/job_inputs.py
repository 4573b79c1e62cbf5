"""Inputs of the scheduled batch inference jobs: a JSONL file, every ``*.jsonl`` of a folder
or S3 prefix (each becomes its own ``.out``), or, when none is configured, a job input
naming everything the solution version knows (what the recipe type's batch handler names)."""

from __future__ import annotations

from .batch import handler_class
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


def write_default_input(version: SolutionVersion, folder: str | Location) -> Location:
    """The default job input of the version's recipe type (its batch handler's
    ``default_input``), written into ``folder`` under that type's file name: every user
    (``all-users.jsonl``), every item (``all-items.jsonl``), every segment query
    (``all-segments.jsonl``). PERSONALIZED_RANKING needs the items to rank, so a configured
    input is required there (an error, nothing written)."""
    name, text = handler_class(version.recipe_type).default_input(version)
    loc = as_location(folder).child(name)
    loc.write_text(text)
    return loc


__all__ = ["job_input_files", "write_default_input"]
