"""Batch inference throughput of source trees run alternately on one fixture (run by hand).

    .venv/bin/python bench/batch_ab.py --trees OLD_TREE,. [--recipes aws-hrnn,...] [--rounds 3]

The fixture (built once under ``--work``, default /tmp/batch-ab): the demo dataset of 33,333
users, 10,000 items and 300,000 interactions; aws-hrnn with ``hidden_dimension`` 64,
aws-user-personalization and aws-user-personalization-v2 with their defaults, one epoch each;
the job is every user 6 times (199,998 lines of ``{"userId": ...}``), top 25. Each run is
its own process with ``PYTHONPATH`` set to the tree: a 1,000-line job first (start-up:
loading, compiled loops), then the timed 200k-line job, whose lines per second are what
issue 17's batch figure is (net of start-up). The trees run one after the other in each
round, so a machine whose speed drifts affects them alike: compare within a round. Prints
one JSON line per run: tree, recipe, round, lines/s, CPU seconds per line (all threads).

Each tree serves solution versions its own code trained (same data, settings and seed;
``versions/<tree>/`` under ``--work``): a tree whose versions save more, or other
hyperparameters, cannot load another tree's, and each is measured on what it would serve.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

RECIPES = {
    "aws-hrnn": {"hidden_dimension": "64", "epochs": "1"},
    "aws-user-personalization": {"epochs": "1"},
    "aws-user-personalization-v2": {"epochs": "1"},
}
TIMES = 6  # the job repeats every user this many times

RUN = """
import json, sys, time
from personalize_pipeline.batch import run_batch_job
from personalize_pipeline.store import load_solution_version
version = load_solution_version(sys.argv[1])
run_batch_job(version, sys.argv[2], sys.argv[4], num_results=25)  # start-up
cpu, wall = time.process_time(), time.perf_counter()
result = run_batch_job(version, sys.argv[3], sys.argv[4], num_results=25)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
print(json.dumps({"lines": result.lines, "lines_per_s": round(result.lines / wall), "cpu_us_per_line":
      round(cpu / result.lines * 1e6, 1)}))
"""


TRAIN = """
import json, sys
from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.features import featurize
from personalize_pipeline.training import SolutionConfig, train
features = featurize(read_dataset_group(sys.argv[1]))
for recipe, params in json.loads(sys.argv[3]).items():
    train(features, SolutionConfig(recipe, params), sys.argv[2] + "/" + recipe)
"""


def fixture(work: Path, recipes: list[str], trees: list[Path]) -> None:
    """The demo data, the jobs and each tree's solution versions, where they are missing."""
    from personalize_pipeline.demo_data import DemoSpec, generate

    if not (work / "data").exists():
        generate(work / "data", DemoSpec(users=33_333, items=10_000, interactions=300_000, seed=1))
    for root in trees:
        missing = {r: RECIPES[r] for r in recipes if not (versions(work, root) / r).exists()}
        if missing:
            args = [sys.executable, "-c", TRAIN, str(work / "data"), str(versions(work, root)), json.dumps(missing)]
            subprocess.run(args, env={**os.environ, "PYTHONPATH": str(root)}, cwd=root, check=True)
    if not (work / "job.jsonl").exists():
        users = pd.read_csv(work / "data" / "interactions.csv", usecols=["USER_ID"], dtype=str)["USER_ID"].unique()
        lines = "".join(json.dumps({"userId": str(u)}) + "\n" for u in users)
        (work / "job.jsonl").write_text(lines * TIMES)
        (work / "warm.jsonl").write_text("".join(lines.splitlines(keepends=True)[:1000]))


def versions(work: Path, root: Path) -> Path:
    """The folder of the solution versions ``root``'s code trained."""
    return work / "versions" / str(root).strip("/").replace("/", "_")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", required=True, help="comma-separated source trees (PYTHONPATH of each run)")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/batch-ab"))
    args = parser.parse_args()
    recipes = args.recipes.split(",")
    work = args.work.resolve()
    trees = args.trees.split(",")
    fixture(work, recipes, [Path(tree).resolve() for tree in trees])
    for round_ in range(args.rounds):
        for recipe in recipes:
            for tree in trees:
                root = Path(tree).resolve()  # also the working directory: `python -c` puts it first on sys.path
                env = {**os.environ, "PYTHONPATH": str(root)}
                paths = [versions(work, root) / recipe, work / "warm.jsonl", work / "job.jsonl", work / "out"]
                out = subprocess.run(
                    [sys.executable, "-c", RUN, *map(str, paths)],
                    env=env,
                    cwd=root,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                line = {"tree": tree, "recipe": recipe, "round": round_, **json.loads(out.stdout.splitlines()[-1])}
                print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
