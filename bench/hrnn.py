"""HRNN family benchmark (run by hand): ``.venv/bin/python bench/hrnn.py``.

1. Quality and training throughput of aws-hrnn against aws-popularity-count in the same
   run (leave-last-out, test split, full ranking, seen items not excluded), on
   movielens-poc (all events, and watch events only: the POC data logs most movies twice,
   a click and a watch, which makes "repeat the last item" an easy win), on a 1M-interaction
   demo dataset and on airline-contextual.
2. aws-hrnn-metadata vs aws-hrnn on data with metadata (airline-contextual, demo).
3. aws-hrnn-coldstart on items held out as new: every interaction with the items created
   in the last 30 days of a demo dataset is removed from training; the users who interacted
   with them are the test users, and the cold-item ranking (HR@10 / NDCG@10 among cold
   items) is compared with a random ranking of the same cold items.

4. ``--movielens FOLDER`` (repeatable): more MovieLens-style dataset groups, such as
   ML-100k or ML-1M converted by ``bench/movielens_convert.py`` (not in the repository),
   measured on their watch events and on their click events like movielens-poc;
   ``--only-movielens`` runs just those (the results then go to
   bench/hrnn_movielens_results.json).

Writes bench/hrnn_results.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.demo_data import DemoSpec, generate
from personalize_pipeline.features import FeaturizeOptions, featurize
from personalize_pipeline.measure import peak_rss_mb
from personalize_pipeline.metrics import EvalSplit, evaluate, ranking_metrics
from personalize_pipeline.recipes import HRNN, HRNNColdstart, HRNNMetadata, PopularityCount, UserBatch

HERE = Path(__file__).parent
SHARED = HERE.parent.parent / "shared" / "data"
KEYS = ("normalized_discounted_cumulative_gain_at_10", "hit_rate_at_10", "mean_reciprocal_rank_at_10")


def compare(name: str, features, recipes) -> list[dict]:
    rows = []
    pop = evaluate(features, PopularityCount, protocol="leave-last-out", with_baseline=False)
    rows.append(
        {
            "dataset": name,
            "recipe": "aws-popularity-count",
            **{k: round(pop.metrics[k], 4) for k in KEYS},
            "train_s": pop.train_seconds,
        }
    )
    for cls in recipes:
        start = time.perf_counter()
        result = evaluate(features, cls, {}, protocol="leave-last-out", with_baseline=False)
        rows.append(
            {
                "dataset": name,
                "recipe": cls.name,
                **{k: round(result.metrics[k], 4) for k in KEYS},
                "ndcg10_vs_popularity": round(result.metrics[KEYS[0]] / max(pop.metrics[KEYS[0]], 1e-12), 2),
                "train_s": result.train_seconds,
                "train_events_per_s": result.train_events_per_second,
                "total_s": round(time.perf_counter() - start, 1),
                "peak_rss_mb": peak_rss_mb(),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def coldstart_heldout(features, days: float = 30.0, seed: int = 0) -> dict:
    created = features.items["creation_timestamp"].to_numpy(np.float64)
    new = created >= np.nanmax(created) - days * 86400
    inter = features.interactions
    is_new = new[inter["item"].to_numpy()]
    train = features.with_interactions(inter[~is_new])
    test = inter[is_new]
    users = np.unique(test["user"].to_numpy())
    order = np.argsort(test["user"].to_numpy(), kind="stable")
    t_users, t_items = test["user"].to_numpy()[order], test["item"].to_numpy()[order]
    pairs = np.unique(t_users.astype(np.int64) * features.n_items + t_items)
    u_of, i_of = pairs // features.n_items, pairs % features.n_items
    ptr = np.searchsorted(u_of, users, side="left")
    truth_ptr = np.append(ptr, len(pairs))
    indptr, items = train.sequences()
    batch = UserBatch.from_histories(users, indptr, items)
    split = EvalSplit("leave-last-out", train, users, batch.history_indptr, batch.history_items, truth_ptr, i_of)
    model = HRNNColdstart(cold_start_max_interactions=0, cold_start_max_duration=days).fit(train)
    recs, _ = model.recommend(batch, 25)
    metrics = ranking_metrics(recs, split, features.n_items)
    rng = np.random.default_rng(seed)
    cold = np.flatnonzero(model.cold)
    random_recs = np.stack([rng.choice(cold, size=25, replace=False) for _ in range(len(users))])
    random_metrics = ranking_metrics(random_recs, split, features.n_items)
    return {
        "cold_items": int(model.cold.sum()),
        "held_out_new_items": int(new.sum()),
        "test_users": int(len(users)),
        **{f"coldstart/{k}": round(metrics[k], 4) for k in KEYS[:2]},
        **{f"random/{k}": round(random_metrics[k], 4) for k in KEYS[:2]},
        "ndcg10_vs_random": round(metrics[KEYS[0]] / max(random_metrics[KEYS[0]], 1e-12), 2),
    }


def movielens_rows(folder: Path) -> list[dict]:
    group = read_dataset_group(folder)
    rows = []
    for event_type in ("watch", "click"):
        features = featurize(group, FeaturizeOptions(event_type=event_type, max_user_history_length_percentile=0.99))
        rows += compare(f"{folder.name} ({event_type})", features, [HRNN, HRNNMetadata])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--movielens",
        action="append",
        default=[],
        type=Path,
        help="another MovieLens-style dataset group (watch and click events)",
    )
    parser.add_argument("--only-movielens", action="store_true", help="run only the --movielens datasets")
    args = parser.parse_args(argv)
    rows: list[dict] = []
    command = " ".join([".venv/bin/python bench/hrnn.py", *(sys.argv[1:] if argv is None else argv)])
    results: dict = {"command": command, "protocol": "leave-last-out (no exclusion of seen items)"}
    for folder in args.movielens:
        rows += movielens_rows(folder)
    if args.only_movielens:
        results["quality"] = rows
        (HERE / "hrnn_movielens_results.json").write_text(json.dumps(results, indent=2) + "\n")
        print_table(rows)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ml = read_dataset_group(SHARED / "movielens-poc")
        rows += compare(
            "movielens-poc", featurize(ml, FeaturizeOptions(max_user_history_length_percentile=0.99)), [HRNN]
        )
        rows += compare(
            "movielens-poc (watch)",
            featurize(ml, FeaturizeOptions(event_type="watch", max_user_history_length_percentile=0.99)),
            [HRNN, HRNNMetadata],
        )
        airline = featurize(
            read_dataset_group(SHARED / "airline-contextual"), FeaturizeOptions(max_user_history_length_percentile=0.99)
        )
        rows += compare("airline-contextual", airline, [HRNN, HRNNMetadata])
        generate(work / "demo100k", DemoSpec(users=3333, items=2000, interactions=100_000, seed=1))
        demo100k = featurize(
            read_dataset_group(work / "demo100k"), FeaturizeOptions(max_user_history_length_percentile=0.99)
        )
        rows += compare("demo-100k", demo100k, [HRNN, HRNNMetadata])
        generate(work / "demo1m", DemoSpec(users=33_333, items=10_000, interactions=1_000_000, seed=1))
        demo1m = featurize(
            read_dataset_group(work / "demo1m"), FeaturizeOptions(max_user_history_length_percentile=0.99)
        )
        rows += compare("demo-1M", demo1m, [HRNN])
        start = time.perf_counter()
        full = HRNN().fit(demo1m)
        results["full_training_1M"] = {
            "seconds": round(time.perf_counter() - start, 1),
            "events": demo1m.n_interactions,
            **full.training_stats(),
            "peak_rss_mb": peak_rss_mb(),
        }
        results["coldstart_demo_100k"] = coldstart_heldout(demo100k)
    results["quality"] = rows
    (HERE / "hrnn_results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(rows)
    print(json.dumps({k: v for k, v in results.items() if k not in ("quality",)}, indent=2))
    return 0


def print_table(rows: list[dict]) -> None:
    cols = ["dataset", "recipe", *KEYS, "ndcg10_vs_popularity", "train_s", "train_events_per_s", "peak_rss_mb"]
    print(
        "| "
        + " | ".join(
            c.replace("normalized_discounted_cumulative_gain", "NDCG")
            .replace("hit_rate", "HR")
            .replace("mean_reciprocal_rank", "MRR")
            for c in cols
        )
        + " |"
    )
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")


if __name__ == "__main__":
    sys.exit(main())
