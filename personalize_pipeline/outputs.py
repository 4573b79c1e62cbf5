"""Where scheduled batch inference writes, and the ``latest`` pointer to the newest output.

Layout under an output root (a folder or ``s3://`` prefix)::

    OUTPUT/<solution>/<solution version>/<run id>/<input name>.out   one folder per run
    OUTPUT/<solution>/latest.json                                   the newest finished run

``latest.json`` is written only after the ``.out`` file is complete, through a temporary
name moved (copied on S3) into place, so a reader following it always finds a whole output,
and a failed run leaves it naming the previous one. The CLI's ``batch-infer --output DIR``
keeps writing straight into DIR (DESIGN.md); this layout is for the orchestrated jobs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .errors import InputError
from .locations import Location, as_location

LATEST = "latest.json"


def run_output_location(root: str | Location, solution: str, version_id: str, run_id: str) -> Location:
    """The folder of one batch inference run of one solution version."""
    return as_location(root).child(solution, version_id, run_id)


def write_latest(
    root: str | Location, solution: str, version_id: str, run_id: str, output: str, **extra: Any
) -> dict[str, Any]:
    """Point ``<root>/<solution>/latest.json`` at a finished output, atomically."""
    record = {
        "solution": solution,
        "solution_version": version_id,
        "run_id": run_id,
        "folder": run_output_location(root, solution, version_id, run_id).url,
        "output": output,
        "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **extra,
    }
    as_location(root).child(solution, LATEST).write_json(record)
    return record


def read_latest(root: str | Location, solution: str) -> dict[str, Any]:
    loc = as_location(root).child(solution, LATEST)
    if not loc.exists():
        raise InputError(f"{loc.url}: no batch output yet for solution {solution!r}")
    return loc.read_json()


__all__ = ["run_output_location", "write_latest", "read_latest", "LATEST"]
