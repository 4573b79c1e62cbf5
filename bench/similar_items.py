"""aws-similar-items vs aws-sims (run by hand): ``.venv/bin/python bench/similar_items.py``.

Next-item protocol on movielens-poc (watch events, items with GENRE and YEAR) and on a demo
dataset (GENRE, PRICE):

* a random 10 % of the items with interactions are made *cold*: every interaction with
  them is removed from training (as if they were new);
* every user's last event is held out; the rest (minus the cold items) is the training set;
* **warm**: users whose last two items are warm; query = the second-to-last item, truth =
  the last; HR@10 / MRR@10 of ``related(query, 10)``;
* **cold**: consecutive pairs (a, b), a != b, of the full histories where a is cold and b
  is warm; query = a, truth = b (what users went on to after the new item).

Both recipes train on the same events with default hyperparameters, except that aws-sims
gets no item-count percentile cut (so both offer every warm item). Writes
bench/similar_items_results.json and prints a markdown table.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.demo_data import DemoSpec, generate
from personalize_pipeline.features import FeaturizeOptions, featurize
from personalize_pipeline.recipes import SIMS, SimilarItems

HERE = Path(__file__).parent
SHARED = HERE.parent.parent / "shared" / "data"
K = 10
MAX_COLD_PAIRS = 20_000


def split(features, seed=0):
    inter = features.interactions  # sorted by (user, timestamp)
    users = inter["user"].to_numpy(np.int64)
    items = inter["item"].to_numpy(np.int64)
    last = np.r_[users[1:] != users[:-1], True]
    rng = np.random.default_rng(seed)
    active = np.unique(items)
    cold = np.zeros(features.n_items, dtype=bool)
    cold[rng.choice(active, size=len(active) // 10, replace=False)] = True
    train = features.with_interactions(inter[~last & ~cold[items]])
    prev_same_user = np.r_[False, users[1:] == users[:-1]]
    second_last = np.r_[last[1:], False] & np.r_[users[1:] == users[:-1], False]
    q_warm = items[second_last]
    t_warm = items[np.flatnonzero(second_last) + 1]
    ok = ~cold[q_warm] & ~cold[t_warm] & (q_warm != t_warm)
    a, b = items[:-1], items[1:]
    pair = prev_same_user[1:] & cold[a] & ~cold[b] & (a != b)
    idx = np.flatnonzero(pair)
    if len(idx) > MAX_COLD_PAIRS:
        idx = np.sort(rng.choice(idx, MAX_COLD_PAIRS, replace=False))
    return train, (q_warm[ok], t_warm[ok]), (a[idx], b[idx]), int(cold.sum())


def hits(model, queries, truth):
    items, _ = model.related(queries, K)
    match = items == truth[:, None]
    rank = np.where(match.any(axis=1), match.argmax(axis=1) + 1, 0)
    return {
        "hr_at_10": round(float((rank > 0).mean()), 4),
        "mrr_at_10": round(float(np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0).mean()), 4),
    }


def run(name, features):
    train, warm, cold, n_cold = split(features)
    rows = []
    for cls, params in (
        (SIMS, {"min_item_interaction_count_percentile": 0.0, "max_item_interaction_count_percentile": 1.0}),
        (SimilarItems, {}),
    ):
        start = time.perf_counter()
        model = cls(**params).fit(train)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "dataset": name,
                "recipe": cls.name,
                "items": features.n_items,
                "cold_items": n_cold,
                "warm_queries": len(warm[0]),
                "cold_queries": len(cold[0]),
                **{f"warm_{k}": v for k, v in hits(model, *warm).items()},
                **{f"cold_{k}": v for k, v in hits(model, *cold).items()},
                "train_s": round(seconds, 2),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> int:
    rows = []
    ml = featurize(read_dataset_group(str(SHARED / "movielens-poc")), FeaturizeOptions(event_type="watch"))
    rows += run("movielens-poc (watch)", ml)
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, DemoSpec(users=5_000, items=3_000, interactions=200_000, seed=3))
        rows += run("demo-200k", featurize(read_dataset_group(tmp)))
    record = {"load_average": list(os.getloadavg()), "cpus": os.cpu_count(), "rows": rows}
    (HERE / "similar_items_results.json").write_text(json.dumps(record, indent=1) + "\n")
    cols = [
        "dataset",
        "recipe",
        "warm_hr_at_10",
        "warm_mrr_at_10",
        "cold_hr_at_10",
        "cold_mrr_at_10",
        "warm_queries",
        "cold_queries",
        "train_s",
    ]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
