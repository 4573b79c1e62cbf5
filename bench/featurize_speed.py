"""Featurization speed as ``bench/run.py`` measures it: read the dataset group, then time
``featurize`` alone (wall and CPU seconds, peak RSS of the process), one JSON line. The
read (and, with ``--validate``, the validation before featurization, as in ``make bench``
and the CLI) are timed too: a large CSV is parsed once, by the read.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/featurize_speed.py /tmp/demo-10000000 [--validate]

Run it from two trees (PYTHONPATH=old tree / new tree) one after the other on the same
files to compare; see bench/README.md, "Featurization speed and memory (issue 17)"."""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    from personalize_pipeline.datasets import read_dataset_group
    from personalize_pipeline.features import featurize
    from personalize_pipeline.measure import measured, release_memory

    line: dict = {"dataset": argv[0]}
    with measured() as m:
        group = read_dataset_group(argv[0])
    line["read_s"] = m.seconds
    if "--validate" in argv[1:]:
        from personalize_pipeline.validation import validate

        with measured() as m:
            validate(group)
        line["validate_s"] = m.seconds
    release_memory()
    cpu = time.process_time()
    with measured() as m:
        featurize(group)
    cpu = time.process_time() - cpu
    rows = group.interactions.num_rows
    line.update(
        interactions=rows,
        featurize_s=m.seconds,
        cpu_s=round(cpu, 3),
        interactions_per_s=round(rows / max(m.seconds, 1e-9)),
        peak_rss_mb=m.peak_rss_mb,
        load_average=[round(x, 2) for x in os.getloadavg()],
    )
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
