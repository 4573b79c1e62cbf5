"""Foundation benchmark (run by hand: ``make bench``): every stage of the pipeline with
aws-popularity-count on movielens-poc and on generated demo datasets.

Reports per stage: seconds, throughput (interactions/s, events/s, users/s) and the peak
RSS of the process so far; writes bench/results.json. Recipe issues add their own rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path


from personalize_pipeline.batch import run_batch_job
from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.demo_data import DemoSpec, generate
from personalize_pipeline.features import featurize
from personalize_pipeline.metrics import evaluate
from personalize_pipeline.recipes import PopularityCount
from personalize_pipeline.training import SolutionConfig, train
from personalize_pipeline.validation import validate

HERE = Path(__file__).parent


def rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def bench_dataset(name: str, location: str, work: Path) -> dict:
    row: dict = {"dataset": name}
    group, t = timed(lambda: read_dataset_group(location))
    n = group.interactions.num_rows
    row.update(interactions=n, read_s=round(t, 3))
    report, t = timed(lambda: validate(group))
    row.update(validate_s=round(t, 3), validation_passed=report.success)
    features, t = timed(lambda: featurize(group))
    row.update(featurize_s=round(t, 3), featurize_interactions_per_s=round(n / t))
    version, t = timed(lambda: train(features, SolutionConfig(), work / f"{name}-solution"))
    row.update(train_s=round(t, 3), train_events_per_s=version.manifest["timings"]["train_events_per_second"])
    _, t = timed(lambda: train(features, SolutionConfig(), work / f"{name}-solution", training_mode="UPDATE"))
    row.update(update_s=round(t, 3))
    result, t = timed(lambda: evaluate(features, PopularityCount, protocol="personalize", with_baseline=False))
    row.update(evaluate_s=round(t, 3), **{f"personalize/{k}": round(v, 4) for k, v in result.metrics.items() if k in ("precision_at_25", "normalized_discounted_cumulative_gain_at_10", "coverage")})
    loo = evaluate(features, PopularityCount, protocol="leave-last-out", with_baseline=False)
    row.update(**{f"leave-last-out/{k}": round(v, 4) for k, v in loo.metrics.items() if k in ("hit_rate_at_10", "normalized_discounted_cumulative_gain_at_10", "mean_reciprocal_rank_at_10")})
    job = work / f"{name}-users.jsonl"
    job.write_text("".join(json.dumps({"userId": str(u)}) + "\n" for u in features.user_ids))
    batch, t = timed(lambda: run_batch_job(version, job, work / f"{name}-out", num_results=25))
    row.update(batch_users=batch.users_scored, batch_s=round(t, 3), batch_users_per_s=round(batch.users_scored / t))
    row["peak_rss_mb"] = rss_mb()
    return row


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000", help="demo dataset sizes (interactions)")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        rows.append(bench_dataset("movielens-poc", str(HERE.parent.parent / "shared" / "data" / "movielens-poc"), work))
        print(json.dumps(rows[-1]), file=sys.stderr)
        for size in [int(s) for s in args.sizes.split(",") if s]:
            spec = DemoSpec(users=max(300, size // 30), items=max(200, size // 100), interactions=size, seed=1)
            (_, t) = timed(lambda: generate(work / f"demo-{size}", spec))
            row = bench_dataset(f"demo-{size}", str(work / f"demo-{size}"), work)
            row["generate_s"] = round(t, 3)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    payload = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "recipe": "aws-popularity-count",
        "command": "make bench",
        "results": rows,
    }
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    cols = ["dataset", "interactions", "validate_s", "featurize_interactions_per_s", "train_s", "update_s", "batch_users_per_s", "peak_rss_mb"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c)) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
