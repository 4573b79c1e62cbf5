"""GPU check (run by hand on a machine with CUDA; ``bench/gpu_check.sh`` sets it up).

1. The batch figure: aws-hrnn, ``hidden_dimension=64``, a 10k-item catalogue, top 25, a job
   of ``--batch-lines`` lines (the known users repeated), scored on ``cuda`` and, in the same
   run, on the CPU; output files compared.
2. aws-hrnn FULL (default hyperparameters, ``device=cuda``) on a demo dataset of
   ``--events`` interactions (``make bench``'s demo spec): featurize, train, wall seconds and
   peak RSS.

Each stage adds to the JSON file given by ``--out`` as soon as it ends, so a run stopped by a
time limit still reports what it finished. ``--device cpu`` runs the same stages on the CPU
(a smoke test of the script on a machine without a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from personalize_pipeline.batch import run_batch_job
from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.demo_data import DemoSpec, generate
from personalize_pipeline.features import featurize
from personalize_pipeline.measure import measured, peak_rss_mb
from personalize_pipeline.store import load_solution_version
from personalize_pipeline.training import SolutionConfig, train


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def batch_stage(work: Path, args, results: dict, save) -> None:
    generate(
        work / "small",
        DemoSpec(users=args.batch_users, items=args.batch_items, interactions=args.batch_users * 9, seed=1),
    )
    features = featurize(read_dataset_group(work / "small"))
    with measured() as m:
        train(
            features,
            SolutionConfig("aws-hrnn", {"hidden_dimension": "64", "epochs": "1", "device": args.device}),
            work / "sol",
        )
    version = load_solution_version(work / "sol")
    job = work / "users.jsonl"
    block = "".join(json.dumps({"userId": str(u)}) + "\n" for u in version.user_ids)
    with job.open("w") as fh:
        for _ in range(args.batch_lines // len(version.user_ids)):
            fh.write(block)
        fh.write(
            "".join(
                json.dumps({"userId": str(u)}) + "\n"
                for u in version.user_ids[: args.batch_lines % len(version.user_ids)]
            )
        )
    out = {"catalogue_items": len(version.item_ids), "users": len(version.user_ids), "train_s": m.seconds}
    for device in dict.fromkeys([args.device, "cpu"]):
        run_batch_job(version, job, work / f"warm-{device}", num_results=25, device=device)  # CUDA context, caches
        result = run_batch_job(version, job, work / f"out-{device}", num_results=25, device=device)
        out[device] = {"lines": result.lines, "seconds": result.seconds, "users_per_second": result.users_per_second}
        log(f"batch on {device}: {out[device]}")
    if args.device != "cpu":
        a = (work / f"out-{args.device}" / "users.jsonl.out").read_bytes().splitlines()
        b = (work / "out-cpu" / "users.jsonl.out").read_bytes().splitlines()
        out["lines_identical_to_cpu"] = sum(
            x == y for x, y in zip(a, b, strict=True)
        )  # scores differ in the last digit where sums round differently
    results["batch"] = out
    save()


def full_stage(work: Path, args, results: dict, save) -> None:
    n = args.events
    t = time.perf_counter()
    generate(work / "big", DemoSpec(users=max(300, n // 30), items=max(200, n // 100), interactions=n, seed=1))
    out: dict = {"events": n, "generate_s": round(time.perf_counter() - t, 1)}
    with measured() as m:
        features = featurize(read_dataset_group(work / "big"))
    out.update(featurize_s=m.seconds, featurize_events_per_s=round(n / max(m.seconds, 1e-9)))
    log(f"featurized {n} events in {m.seconds:.1f} s")
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with measured() as m:
        version = train(features, SolutionConfig("aws-hrnn", {"device": args.device}), work / "full")
    stats = version.manifest.get("training", {}) or {}
    out.update(
        full_train_s=m.seconds,
        full_peak_rss_mb=peak_rss_mb(),
        epochs_run=stats.get("epochs_run"),
        seconds_per_epoch=stats.get("seconds_per_epoch"),
        gpu_peak_memory_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1) if args.device == "cuda" else None,
    )
    log(f"FULL: {out}")
    results["full"] = out
    save()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--batch-users", type=int, default=33_333)
    ap.add_argument("--batch-items", type=int, default=10_000)
    ap.add_argument("--batch-lines", type=int, default=200_000)
    ap.add_argument("--stages", default="batch,full")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    results: dict = {
        "command": " ".join(sys.argv),
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }

    def save() -> None:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")

    save()
    with tempfile.TemporaryDirectory() as tmp:
        for stage in args.stages.split(","):
            t = time.perf_counter()
            {"batch": batch_stage, "full": full_stage}[stage](Path(tmp), args, results, save)
            log(f"stage {stage}: {time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
