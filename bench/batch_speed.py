"""Batch inference speed (run by hand): ``.venv/bin/python bench/batch_speed.py [--quick]``.

aws-hrnn with ``hidden_dimension=64`` on a demo dataset with a 10k-item catalogue, top 25,
every known user as the job input, in one process:

- the batch job as shipped (cached user states: lookup + matrix multiply + top-k);
- the same job running the GRU over every history (no cached states);
- the same job with a filter (``EXCLUDE ItemID WHERE Items.GENRE IN ("Action") |
  EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("*")``);
- a straightforward per-user loop (one ``recommend`` call per user) over a sample;
- a job with 1,000,000 input lines (known users repeated) to show memory stays bounded.

Writes bench/batch_results.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from personalize_pipeline.batch import run_batch_job
from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.demo_data import DemoSpec, generate
from personalize_pipeline.features import featurize
from personalize_pipeline.measure import peak_rss_mb
from personalize_pipeline.store import load_solution_version
from personalize_pipeline.training import SolutionConfig, train

HERE = Path(__file__).parent
FILTER = 'EXCLUDE ItemID WHERE Items.GENRE IN ("Action") | EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("*")'


def main() -> int:
    quick = "--quick" in sys.argv
    spec = DemoSpec(users=33_333, items=10_000, interactions=300_000 if not quick else 120_000, seed=1)
    results: dict = {
        "command": ".venv/bin/python bench/batch_speed.py",
        "recipe": "aws-hrnn",
        "hidden_dimension": 64,
        "num_results": 25,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        generate(work / "data", spec)
        features = featurize(read_dataset_group(work / "data"))
        train(features, SolutionConfig("aws-hrnn", {"hidden_dimension": "64", "epochs": "1"}), work / "sol")
        version = load_solution_version(work / "sol")
        users = version.user_ids
        job = work / "users.jsonl"
        job.write_text("".join(json.dumps({"userId": str(u)}) + "\n" for u in users))
        results.update(catalogue_items=len(version.item_ids), users=len(users))

        def timed_job(name: str, **kwargs) -> None:
            result = run_batch_job(version, job, work / f"out-{name}", num_results=25, **kwargs)
            results[name] = {
                "users_per_second": result.users_per_second,
                "seconds": result.seconds,
                "lines": result.lines,
            }
            print(name, results[name], file=sys.stderr, flush=True)

        timed_job("cached_states")
        timed_job("cached_states_with_filter", filter_expression=FILTER)
        cache = version.recipe.fit_state.user_state
        version.recipe.fit_state.user_state = None
        timed_job("gru_per_chunk")
        version.recipe.fit_state.user_state = cache

        sample = np.arange(0, len(users), max(1, len(users) // 500))[:500]
        start = time.perf_counter()
        for code in sample:
            version.recipe.recommend(version.user_batch(np.array([code])), 25)
        loop_s = time.perf_counter() - start
        results["per_user_loop"] = {"users_per_second": round(len(sample) / loop_s, 1), "users": len(sample)}
        results["speedup_vs_loop"] = round(
            results["cached_states"]["users_per_second"] / results["per_user_loop"]["users_per_second"], 1
        )

        big = work / "big.jsonl"
        n_lines = 1_000_000 if not quick else 200_000
        line_block = "".join(json.dumps({"userId": str(u)}) + "\n" for u in users)
        with big.open("w") as fh:
            for _ in range(n_lines // len(users)):
                fh.write(line_block)
            fh.write("".join(json.dumps({"userId": str(u)}) + "\n" for u in users[: n_lines % len(users)]))
        before = peak_rss_mb()
        result = run_batch_job(version, big, work / "out-big", num_results=25)
        results["million_lines"] = {
            "lines": result.lines,
            "users_per_second": result.users_per_second,
            "seconds": result.seconds,
            "peak_rss_mb_before": before,
            "peak_rss_mb_after": peak_rss_mb(),
        }
    (HERE / "batch_results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
