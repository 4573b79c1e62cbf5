"""UPDATE cost with incremental imports, as a new user would measure it with the CLI.

A demo dataset of N interactions is split into time-ordered files of 100k events under
``interactions/``; FULL trains on all files but the newest, then the newest lands and
UPDATE runs. Reports the wall time of each whole command (start-up included) and the
ratio UPDATE / FULL (with ``--repeat K``, the fastest of K UPDATEs from the same FULL;
``--reuse-full`` skips the set-up and FULL of an earlier run). ``--full-epochs`` caps the
FULL's epochs (the UPDATE's cost does not depend on them) so that longer histories can be
set up in reasonable time.

    python bench/update_increments.py --interactions 1000000 --recipe aws-hrnn
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

CLI = [sys.executable, "-m", "personalize_pipeline.cli"]
FILE_EVENTS = 100_000


def run(*args: str) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{proc.stderr}")
    return seconds, json.loads(proc.stdout.strip().splitlines()[-1])


def prepare(work: Path, interactions: int, users: int, items: int) -> tuple[Path, Path]:
    demo = work / "demo"
    if not (demo / "interactions.csv").exists():
        subprocess.run(
            [
                *CLI,
                "demo-data",
                "--out",
                str(demo),
                "--interactions",
                str(interactions),
                "--users",
                str(users),
                "--items",
                str(items),
            ],
            check=True,
            capture_output=True,
        )
    lake = work / "lake"
    shutil.rmtree(lake, ignore_errors=True)
    (lake / "interactions").mkdir(parents=True)
    df = pd.read_csv(demo / "interactions.csv", dtype=str, keep_default_na=False)
    df = df.iloc[np.argsort(df["TIMESTAMP"].astype(np.int64).to_numpy(), kind="stable")]
    n_files = int(np.ceil(len(df) / FILE_EVENTS))
    for i in range(n_files - 1):
        df.iloc[i * FILE_EVENTS : (i + 1) * FILE_EVENTS].to_csv(
            lake / "interactions" / f"part-{i:04d}.csv", index=False
        )
    newest = work / "newest.csv"
    df.iloc[(n_files - 1) * FILE_EVENTS :].to_csv(newest, index=False)
    for name in ("items.csv", "users.csv"):
        shutil.copy(demo / name, lake / name)
    return lake, newest


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--interactions", type=int, default=1_000_000)
    p.add_argument("--users", type=int)
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--recipe", default="aws-hrnn")
    p.add_argument("--full-epochs", type=int)
    p.add_argument("--work", default=".data/bench-update")
    p.add_argument("--repeat", type=int, default=1, help="UPDATE runs from the same FULL; the minimum is reported")
    p.add_argument("--reuse-full", action="store_true", help="reuse the FULL of an earlier run of the same size")
    args = p.parse_args()
    users = args.users or max(1000, args.interactions // 30)
    work = Path(args.work) / f"{args.interactions}"
    work.mkdir(parents=True, exist_ok=True)
    solution = work / f"solution-{args.recipe}"
    full_only = work / f"solution-{args.recipe}.full"
    hp = ["--hp", f"epochs={args.full_epochs}"] if args.full_epochs else []
    lake = work / "lake"
    if args.reuse_full and full_only.exists():
        full_s = float(json.loads((full_only / "bench_full.json").read_text())["full_wall_seconds"])
    else:
        lake, newest = prepare(work, args.interactions, users, args.items)
        shutil.rmtree(solution, ignore_errors=True)
        full_s, _ = run("train", "--dataset", str(lake), "--recipe", args.recipe, *hp, "--out", str(solution))
        shutil.copy(newest, lake / "interactions" / "part-9999.csv")
        shutil.rmtree(full_only, ignore_errors=True)
        shutil.copytree(solution, full_only)
        (full_only / "bench_full.json").write_text(json.dumps({"full_wall_seconds": full_s}))
    update_runs = []
    for _ in range(args.repeat):
        shutil.rmtree(solution, ignore_errors=True)
        shutil.copytree(full_only, solution)
        update_s, update = run(
            "train", "--dataset", str(lake), "--recipe", args.recipe, *hp,
            "--training-mode", "UPDATE", "--base", str(solution), "--out", str(solution),
        )  # fmt: skip
        update_runs.append(round(update_s, 2))
    update_s = min(update_runs)
    result = {
        "interactions": args.interactions,
        "recipe": args.recipe,
        "full_epochs": args.full_epochs or "default",
        "full_wall_seconds": round(full_s, 2),
        "update_wall_seconds": round(update_s, 2),
        "update_over_full": round(update_s / full_s, 4),
        "update_runs_seconds": update_runs,
        "update_train_seconds": update["train_seconds"],
        "new_files": update.get("new_files"),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
