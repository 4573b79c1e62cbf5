"""aws-hrnn on large featurized data (run by hand; issue 17): training time, CPU seconds, peak
RSS and leave-last-out NDCG@10 / HR@10 on a sample of test users, optionally after every epoch.

    # featurized data saved once (personalize_pipeline.features.save_features), then e.g.
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/hrnn_large.py /tmp/hrnn10m/feat-10000000 \
        --per-epoch --eval-users 5000 --hp epochs=2

``--users-every K`` keeps the users whose code is a multiple of K (a slice with the whole
catalogue); ``--no-split`` trains on everything (timing only); ``--profile FILE`` runs the
fit under cProfile. Prints one JSON line.
"""

import argparse
import json
import os
import resource
import time

import numpy as np
import torch

from personalize_pipeline.features import load_features
from personalize_pipeline.metrics import EvalSplit, leave_last_out_split, ranking_metrics, recommend_split
from personalize_pipeline.recipes import HRNN

ap = argparse.ArgumentParser()
ap.add_argument("features")
ap.add_argument("--users-every", type=int, default=1, help="keep users with code %% k == 0")
ap.add_argument("--hp", action="append", default=[])
ap.add_argument("--eval-users", type=int, default=20000)
ap.add_argument("--per-epoch", action="store_true")
ap.add_argument("--no-split", action="store_true", help="fit on everything (timing only)")
ap.add_argument("--profile", default=None)
a = ap.parse_args()


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


t0 = time.perf_counter()
f = load_features(a.features)
if a.users_every > 1:
    keep = f.interactions["user"].to_numpy() % a.users_every == 0
    f = f.where(keep)
print(f"loaded {f.n_interactions} events in {time.perf_counter() - t0:.1f}s", flush=True)
params = {}
for kv in a.hp:
    k, v = kv.split("=")
    params[k] = json.loads(v) if v[0] in "0123456789-[{tf" else v
params = HRNN.resolve_hyperparameters(params)


def subsplit(s, n):
    n = min(n, len(s.test_users))
    rows = np.sort(np.random.default_rng(0).choice(len(s.test_users), n, replace=False))
    lens = np.diff(s.input_indptr)[rows]
    starts = s.input_indptr[rows]
    ptr = np.concatenate([[0], np.cumsum(lens)])
    idx = np.repeat(starts - ptr[:-1], lens) + np.arange(ptr[-1])  # each sampled user's input events
    return EvalSplit(
        s.protocol, s.train, s.test_users[rows], ptr, s.input_items[idx], np.arange(n + 1), s.truth_items[rows]
    )


if a.no_split:
    train, split = f, None
else:
    full = leave_last_out_split(f)
    split = subsplit(full, a.eval_users)
    train = full.train
    del full
model = HRNN(**params)
print(
    "params", {k: params[k] for k in ("epochs", "batch_size", "length_buckets", "n_sample") if k in params}, flush=True
)


def score():
    model._scorer = None
    rec = recommend_split(model, split, 25)
    m = ranking_metrics(rec, split, split.train.n_items)
    return m["normalized_discounted_cumulative_gain_at_10"], m["hit_rate_at_10"]


curve = []
if a.per_epoch and split is not None:

    def cb(epoch, avg):
        model.fitted = True
        with avg.swapped_in():
            model.net.eval()
            nd, hr = score()
            model.net.train()
        curve.append((epoch, round(nd, 4), round(hr, 4)))
        print(f"  epoch {epoch}: NDCG@10 {nd:.4f} HR@10 {hr:.4f}", flush=True)

    model.epoch_callback = cb
c0, t1 = cpu(), time.perf_counter()
if a.profile:
    import cProfile

    cProfile.run("model.fit(train)", a.profile)
else:
    model.fit(train)
fit_s, fit_cpu = time.perf_counter() - t1, cpu() - c0
st = model.training_stats()
out = {
    "events": int(train.n_interactions),
    "params": {k: params[k] for k in ("epochs", "n_sample", "batch_size")},
    "fit_s": round(fit_s, 1),
    "fit_cpu_s": round(fit_cpu, 1),
    "epochs": st.get("epochs_run"),
    "s_per_epoch": st.get("seconds_per_epoch"),
    "windows": st.get("windows"),
    "batch": st.get("batch_size"),
    "loss": st.get("loss_by_epoch"),
    "curve": curve,
    "threads": torch.get_num_threads(),
    "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    "load": os.getloadavg(),
}
if split is not None:
    nd, hr = score()
    out.update(ndcg10=round(nd, 4), hr10=round(hr, 4), eval_users=len(split.test_users))
print(json.dumps(out), flush=True)
