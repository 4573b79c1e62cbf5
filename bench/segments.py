"""Batch segment quality (run by hand): ``nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python bench/segments.py``.

Time split: the events before the 90 % quantile of TIMESTAMP train aws-item-affinity /
aws-item-attribute-affinity; the later events are the truth. For each query, a segment of
N users is compared with the users who interact with the item (aws-item-affinity; items
with at least 5 such users, up to 500 items) or with any item of the genre
(aws-item-attribute-affinity, ``ITEMS.GENRE = "..."`` for each genre) after the split:
precision@N (share of the segment that does interact) and recall@N (share of those users
the segment finds). Baselines on the same split, from the training events only: the N most
active users of the training period (the same list for every query), the N most recently
active users (latest training event first; the same list for every query), the model's own
activity factor alone (its recency-weighted counts, no affinity: what the item adds), and
for items, the item's own past users (most recent first, then most active).

Writes bench/segments_results.json and prints a markdown table.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.demo_data import DemoSpec, generate
from personalize_pipeline.features import featurize
from personalize_pipeline.recipes import ItemAffinity, ItemAttributeAffinity
from personalize_pipeline.segments import AttributeQueries

HERE = Path(__file__).parent
SHARED = HERE.parent.parent / "shared" / "data"
N = 50
MIN_TEST_USERS = 5
MAX_QUERIES = 500
BASELINES = ("most_active", "most_recent", "activity_alone", "past_users")


def time_split(features):
    inter = features.interactions
    cutoff = np.quantile(inter["timestamp"].to_numpy(), 0.9)
    before = inter["timestamp"].to_numpy() < cutoff
    return features.with_interactions(inter[before]), inter[~before]


def truth_matrix(test, n_users, n_items):
    """Binary [n_items, n_users]: who interacts with what after the split."""
    m = sp.csr_matrix(
        (np.ones(len(test), np.float32), (test["item"].to_numpy(), test["user"].to_numpy())), shape=(n_items, n_users)
    )
    m.data[:] = 1.0
    return m


def scores(segments: np.ndarray, truth: sp.csr_matrix) -> dict[str, float]:
    """Mean precision@N and recall@N of segments [n_queries, N] against truth rows."""
    rows = np.repeat(np.arange(len(segments)), segments.shape[1])
    cols = segments.ravel()
    valid = cols >= 0
    hit = np.zeros(len(cols), dtype=bool)
    hit[valid] = np.asarray(truth[rows[valid], cols[valid]]).ravel() > 0
    hits = hit.reshape(segments.shape).sum(axis=1)
    totals = np.asarray(truth.sum(axis=1)).ravel()
    return {
        "precision": round(float((hits / segments.shape[1]).mean()), 4),
        "recall": round(float((hits / np.maximum(totals, 1)).mean()), 4),
    }


def same_list(key, n_queries):
    """The N users with the highest ``key`` (ties: lower code), one list for every query."""
    top = np.lexsort((np.arange(len(key)), -key))[:N]
    return np.broadcast_to(top, (n_queries, len(top)))


def most_active(train, n_queries):
    return same_list(np.bincount(train.interactions["user"].to_numpy(), minlength=train.n_users), n_queries)


def most_recent(train, n_queries):
    """Latest training event first; among equal times, the more active user."""
    inter = train.interactions
    users = inter["user"].to_numpy()
    last = np.full(train.n_users, -np.inf)
    np.maximum.at(last, users, inter["timestamp"].to_numpy().astype(np.float64))
    activity = np.bincount(users, minlength=train.n_users)
    top = np.lexsort((np.arange(train.n_users), -activity, -last))[:N]
    return np.broadcast_to(top, (n_queries, len(top)))


def baselines(train, model, n_queries, truth):
    return {
        "most_active": scores(most_active(train, n_queries), truth),
        "most_recent": scores(most_recent(train, n_queries), truth),
        "activity_alone": scores(same_list(model.log_activity, n_queries), truth),
    }


def past_users(train, items):
    """Per item: its training users, most recent first, then the most active users."""
    inter = train.interactions
    activity = np.bincount(inter["user"].to_numpy(), minlength=train.n_users)
    active_order = np.lexsort((np.arange(train.n_users), -activity))
    frame = pd.DataFrame(
        {"user": inter["user"].to_numpy(), "item": inter["item"].to_numpy(), "t": inter["timestamp"].to_numpy()}
    )
    frame = frame[frame["item"].isin(items)].sort_values("t", ascending=False).drop_duplicates(["item", "user"])
    groups = frame.groupby("item")["user"].apply(list).to_dict()
    out = np.full((len(items), N), -1, dtype=np.int64)
    for r, item in enumerate(items):  # at most MAX_QUERIES rows: a baseline, not the engine
        seen = groups.get(item, [])[:N]
        fill = active_order[~np.isin(active_order, seen)][: N - len(seen)]
        out[r] = np.r_[seen, fill]
    return out


def item_affinity(name, features, seed=0):
    train, test = time_split(features)
    truth = truth_matrix(test, train.n_users, train.n_items)
    per_item = np.asarray(truth.sum(axis=1)).ravel()
    candidates = np.flatnonzero(per_item >= MIN_TEST_USERS)
    rng = np.random.default_rng(seed)
    items = np.sort(rng.choice(candidates, size=min(MAX_QUERIES, len(candidates)), replace=False))
    start = time.perf_counter()
    model = ItemAffinity().fit(train)
    fit_s = time.perf_counter() - start
    q = sp.csr_matrix(
        (np.ones(len(items), np.float32), (items, np.arange(len(items)))), shape=(train.n_items, len(items))
    )
    start = time.perf_counter()
    segs, _ = model.segments(q, N)
    seg_s = time.perf_counter() - start
    t = truth[items]
    return {
        "dataset": name,
        "recipe": "aws-item-affinity",
        "queries": len(items),
        "users": train.n_users,
        "model": scores(segs, t),
        **baselines(train, model, len(items), t),
        "past_users": scores(past_users(train, items), t),
        "activity_half_life_days": model.training_stats()["activity_half_life_days"],
        "train_s": round(fit_s, 2),
        "segments_per_s": round(len(items) / seg_s, 1),
    }


def attribute_affinity(name, features, field="GENRE"):
    train, test = time_split(features)
    truth_items = truth_matrix(test, train.n_users, train.n_items)
    catalog = pd.DataFrame(
        {
            "ITEM_ID": train.item_ids,
            **{c[4:]: train.items[c].to_numpy() for c in train.items.columns if c.startswith("raw_")},
        }
    )
    version = SimpleNamespace(item_ids=train.item_ids, items_metadata=catalog, user_ids=train.user_ids)
    queries = AttributeQueries(version)
    genres = sorted({g for v in catalog[field].dropna() for g in str(v).split("|")})
    masks = [(g, queries.mask(f'ITEMS.{field} = "{g}"')) for g in genres]
    masks = [(g, m) for g, m in masks if not isinstance(m, str)]
    cols = [np.flatnonzero(m) for _, m in masks]
    lengths = np.array([len(c) for c in cols])
    q = sp.csr_matrix(
        (np.ones(int(lengths.sum()), np.float32), (np.concatenate(cols), np.repeat(np.arange(len(cols)), lengths))),
        shape=(train.n_items, len(cols)),
    )
    truth = (q.T @ truth_items).tocsr()
    truth.data[:] = 1.0
    keep = np.asarray(truth.sum(axis=1)).ravel() >= MIN_TEST_USERS
    model = ItemAttributeAffinity().fit(train)
    segs, _ = model.segments(q[:, np.flatnonzero(keep)], N)
    t = truth[np.flatnonzero(keep)]
    return {
        "dataset": name,
        "recipe": "aws-item-attribute-affinity",
        "queries": int(keep.sum()),
        "users": train.n_users,
        "model": scores(segs, t),
        **baselines(train, model, int(keep.sum()), t),
        "past_users": None,
        "activity_half_life_days": model.training_stats()["activity_half_life_days"],
    }


def main() -> int:
    load = list(os.getloadavg())
    rows = []
    ml = featurize(read_dataset_group(str(SHARED / "movielens-poc")))
    rows += [item_affinity("movielens-poc", ml), attribute_affinity("movielens-poc", ml)]
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, DemoSpec(users=5_000, items=3_000, interactions=200_000, seed=3))
        demo = featurize(read_dataset_group(tmp))
        rows += [item_affinity("demo-200k", demo), attribute_affinity("demo-200k", demo)]
    for r in rows:
        print(json.dumps(r), file=sys.stderr)
    (HERE / "segments_results.json").write_text(
        json.dumps({"load_average": load, "N": N, "rows": rows}, indent=1) + "\n"
    )
    print(
        f"| dataset | recipe | queries | half-life (days) | precision@{N} | recall@{N} | most active | most recent "
        "| activity alone | past users |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        pair = [f"{b['precision']} / {b['recall']}" if b else "—" for b in (r[k] for k in BASELINES)]
        print(
            f"| {r['dataset']} | {r['recipe']} | {r['queries']} | {r['activity_half_life_days']} "
            f"| {r['model']['precision']} | {r['model']['recall']} | " + " | ".join(pair) + " |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
