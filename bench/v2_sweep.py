"""Validation curves of aws-user-personalization-v2 settings (run by hand; not a test).

Each setting trains on the validation split (each user's last two events held out; the
second-to-last is the truth: the test item is never looked at) and reports validation
NDCG@10 every ``--every`` epochs, with the averaged weights, in parallel processes:

    PYTHONPATH=. .venv/bin/python bench/v2_sweep.py --dataset ../shared/data/amazon-beauty --exclude-seen \\
        --setting default --setting learning_rate=0.001 --threads 2 --out /tmp/sweep.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time

import numpy as np


def run_setting(args: tuple) -> dict:
    dataset, setting, exclude_seen, every, threads, epochs, budget, with_test, first, test_only = args
    import torch

    torch.set_num_threads(threads)
    from personalize_pipeline.datasets import read_dataset_group
    from personalize_pipeline.features import featurize
    from personalize_pipeline.metrics import leave_last_out_split, ranking_metrics, recommend_split
    from personalize_pipeline.recipes import UserPersonalizationV2
    from personalize_pipeline.tuning import validation_split

    hp = dict(kv.split("=", 1) for kv in setting.split(",") if "=" in kv)
    features = featurize(read_dataset_group(dataset))
    split = validation_split(features)
    # the test split trains on the same events (each user's last two held out): its curve is
    # what `evaluate --protocol leave-last-out` reports after that many epochs
    test_split = leave_last_out_split(features, stage="test") if with_test else None
    model = UserPersonalizationV2(**{"epochs": epochs, "max_training_seconds": budget, **hp})
    curve: list[dict] = []
    start, cpu_start = time.perf_counter(), time.process_time()

    def on_epoch(epoch: int, average) -> None:
        if epoch % every or epoch < first:
            return
        t, cpu = time.perf_counter(), time.process_time()
        with average.swapped_in():
            model.net.eval()
            model.fitted = True
            model.fit_state.user_state = None
            ndcg = float("nan") if test_only else _ndcg10(split)
            test = {"test_ndcg10": round(float(_ndcg10(test_split)), 5)} if test_split is not None else {}
        model.net.train()
        scores = model._early_stopping.scores
        held = {"held_out_ndcg10": scores[-1]} if scores else {}
        curve.append(
            {
                "epoch": epoch,
                "ndcg10": round(float(ndcg), 5),
                **test,
                **held,
                "train_s": round(t - start - eval_seconds[0], 1),
                "train_cpu_s": round(cpu - cpu_start - eval_cpu[0], 1),
            }
        )
        eval_seconds[0] += time.perf_counter() - t
        eval_cpu[0] += time.process_time() - cpu
        print(f"{setting} epoch {epoch}: {ndcg:.4f} {curve[-1]}", file=sys.stderr, flush=True)

    def _ndcg10(s) -> float:
        rec = recommend_split(model, s, 10, exclude_seen=exclude_seen)
        return ranking_metrics(rec, s, s.train.n_items, ks=(10,))["normalized_discounted_cumulative_gain_at_10"]

    eval_seconds, eval_cpu = [0.0], [0.0]
    model.epoch_callback = on_epoch
    model.fit(split.train)
    return {"setting": setting, "curve": curve, "stats": model.training_stats()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--setting", action="append", default=[])
    parser.add_argument("--exclude-seen", action="store_true")
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--budget", type=float, default=3600.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    parser.add_argument("--test", action="store_true", help="also the test split's NDCG@10 (reporting, not tuning)")
    parser.add_argument("--first", type=int, default=0, help="no evaluation before this epoch")
    parser.add_argument("--test-only", action="store_true", help="only the test split's NDCG@10 (half the evaluation)")
    a = parser.parse_args()
    jobs = [
        (
            a.dataset,
            s,
            a.exclude_seen,
            a.every,
            a.threads,
            a.epochs,
            a.budget,
            a.test or a.test_only,
            a.first,
            a.test_only,
        )
        for s in a.setting or ["default"]
    ]
    with mp.get_context("spawn").Pool(len(jobs)) as pool:
        results = pool.map(run_setting, jobs)
    with open(a.out, "w") as fh:
        json.dump(results, fh, indent=1)
    for r in results:
        key = "test_ndcg10" if a.test_only else "ndcg10"
        best = max(r["curve"], key=lambda c: c[key]) if r["curve"] else {}
        print(
            r["setting"],
            "best",
            best,
            "last",
            r["curve"][-1] if r["curve"] else None,
            "s/epoch",
            r["stats"].get("seconds_per_epoch"),
        )
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
