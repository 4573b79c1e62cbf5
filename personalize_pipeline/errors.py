"""The one exception type for problems with what the user gave us.

The CLI turns it into one line on stderr and exit code 2; the Dagster layer into a failed
check or step carrying the same message. Anything else is a bug in the pipeline.
"""


class InputError(Exception):
    """Bad input: a file, row, field, option or location the user supplied is wrong."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line

    @property
    def message(self) -> str:
        return self.args[0]


class StorageUnavailable(InputError):
    """The storage could not be reached or answered with a server-side error: worth
    retrying later (the Dagster assets retry these with backoff), still one clear line."""

    transient = True
