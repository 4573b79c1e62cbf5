"""The one exception type for problems with what the user gave us.

The CLI turns it into one line on stderr and exit code 2; the Dagster layer into a failed
check or step carrying the same message. Anything else is a bug in the pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class InputError(Exception):
    """Bad input: a file, row, field, option or location the user supplied is wrong."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line

    @property
    def message(self) -> str:
        return self.args[0]

    @classmethod
    def from_validation(cls, exc: ValidationError, source: str = "") -> InputError:
        """A pydantic ``ValidationError`` (configuration file, request document) as one line:
        ``source: key.path: problem`` for each bad field, joined by ``;``."""
        parts = []
        for error in exc.errors():
            path = key_path(tuple(error["loc"]))
            if error["type"] == "extra_forbidden":
                problem = "unknown key"
            elif error["type"] in ("model_type", "model_attributes_type", "dict_type"):
                problem = f"must be an object (key: value), got {type(error['input']).__name__}"
            else:
                problem = error["msg"].removeprefix("Value error, ")
            parts.append(f"{path}: {problem}" if path else problem)
        return cls((f"{source}: " if source else "") + "; ".join(parts))


def key_path(loc: tuple[int | str, ...]) -> str:
    """``('solutions', 0, 'batch_inferance')`` → ``solutions[0].batch_inferance``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class StorageUnavailable(InputError):
    """The storage could not be reached or answered with a server-side error: worth
    retrying later (the Dagster assets retry these with backoff), still one clear line."""

    transient = True
