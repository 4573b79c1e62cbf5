"""Time and memory of one stage: wall seconds and the process's peak resident memory.

    with measured() as m:
        features = featurize(group)
    m.seconds, m.peak_rss_mb, m.as_dict()

Used by the Dagster assets (metadata of every materialization) and by ``bench/run.py``.
The peak is the process's high-water mark since it started (``getrusage``), so a stage run
in its own process (a Dagster step, a benchmark child) reports its own peak.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (MiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0), 1)


@dataclass
class Measurement:
    seconds: float = 0.0
    peak_rss_mb: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"seconds": self.seconds, "peak_rss_mb": self.peak_rss_mb}


@contextlib.contextmanager
def measured() -> Iterator[Measurement]:
    """Fills the yielded ``Measurement`` when the block ends (also when it raises)."""
    m = Measurement()
    start = time.perf_counter()
    try:
        yield m
    finally:
        m.seconds = round(time.perf_counter() - start, 3)
        m.peak_rss_mb = peak_rss_mb()


def release_memory(collect: bool = True) -> None:
    """Give memory freed by Python, Arrow and numpy back to the OS between stages: a garbage
    collection (unless ``collect`` is false: inside a stage whose buffers are freed by
    reference counting, where a full collection only costs time), Arrow's pool
    ``release_unused`` and glibc's ``malloc_trim`` (where there is one). Freed buffers
    otherwise stay in the allocators and count in the process's RSS."""
    import ctypes
    import ctypes.util
    import gc

    if collect:
        gc.collect()
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pass
    libc = ctypes.util.find_library("c")
    if libc and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(libc).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


__all__ = ["Measurement", "measured", "peak_rss_mb", "release_memory"]
