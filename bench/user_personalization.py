"""aws-user-personalization benchmark (run by hand): ``.venv/bin/python bench/user_personalization.py [--quick]``.

1. Accuracy at exploration weight 0 against aws-hrnn and popularity in the same run
   (leave-last-out, full ranking): movielens-poc watch events, airline-contextual and a
   100k-interaction demo dataset (which has impressions).
2. UPDATE against FULL on a 1M-interaction demo dataset: FULL is trained on the data up to
   the last two days, UPDATE on everything (new events, new items); both training times,
   their ratio, and the share of batch lists (default exploration, 0.3) holding items that
   only appeared after the FULL.
3. The exploration simulation (``personalize_pipeline.simulation``) for weights 0, 0.3 and
   0.8: per round clicks, new-item share, new items discovered and coverage.

Writes bench/user_personalization_results.json, bench/exploration_results.json and
bench/exploration.png.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from hrnn import KEYS, SHARED, compare, rss_mb  # noqa: E402

from personalize_pipeline.datasets import read_dataset_group  # noqa: E402
from personalize_pipeline.demo_data import DemoSpec, generate  # noqa: E402
from personalize_pipeline.features import FeaturizeOptions, featurize  # noqa: E402
from personalize_pipeline.recipes import HRNN, ExplorationConfig, UserPersonalization  # noqa: E402
from personalize_pipeline.simulation import SimulationConfig, plot_simulation, run_simulation, split_as_of  # noqa: E402

HERE = Path(__file__).parent
OPTIONS = FeaturizeOptions(max_user_history_length_percentile=0.99)


def update_vs_full(work: Path, spec: DemoSpec, new_days: float = 2.0) -> dict:
    generate(work / "all", spec)
    before = work / "before"
    split_as_of(work / "all", before, spec.end - int(new_days * 86400))
    old = featurize(read_dataset_group(before), OPTIONS)
    new = featurize(read_dataset_group(work / "all"), OPTIONS)
    start = time.perf_counter()
    model = UserPersonalization().fit(old)
    full_s = time.perf_counter() - start
    full_stats = model.training_stats()
    start = time.perf_counter()
    model.update(new, previous_item_ids=old.item_ids, previous_user_ids=old.user_ids)  # as training.train does
    update_s = time.perf_counter() - start
    new_items = ~np.isin(new.item_ids, old.item_ids)
    from personalize_pipeline.recipes import UserBatch

    users = np.arange(min(5000, new.n_users))
    batch = UserBatch.from_histories(users, *new.sequences())
    recs, _ = model.recommend(batch, 25, exploration=ExplorationConfig())
    relevance, _ = model.recommend(batch, 25)
    return {
        "events_full": old.n_interactions,
        "events_update": new.n_interactions,
        "new_events": new.n_interactions - old.n_interactions,
        "new_items": int(new_items.sum()),
        "full_train_seconds": round(full_s, 2),
        "full_epochs": full_stats["epochs_run"],
        "update_train_seconds": round(update_s, 2),
        "update_over_full": round(update_s / full_s, 4),
        "update_windows": model.training_stats()["windows"],
        "full_windows": full_stats["windows"],
        "lists_with_new_items_exploration_0.3": round(float(new_items[recs].any(axis=1).mean()), 4),
        "lists_with_new_items_weight_0": round(float(new_items[relevance].any(axis=1).mean()), 4),
        "peak_rss_mb": rss_mb(),
    }


def main() -> int:
    quick = "--quick" in sys.argv
    results: dict = {
        "command": ".venv/bin/python bench/user_personalization.py",
        "protocol": "leave-last-out (no exclusion of seen items)",
    }
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ml = read_dataset_group(SHARED / "movielens-poc")
        rows += compare(
            "movielens-poc (watch)",
            featurize(ml, FeaturizeOptions(event_type="watch", max_user_history_length_percentile=0.99)),
            [HRNN, UserPersonalization],
        )
        rows += compare(
            "airline-contextual",
            featurize(read_dataset_group(SHARED / "airline-contextual"), OPTIONS),
            [HRNN, UserPersonalization],
        )
        generate(work / "demo100k", DemoSpec(users=3333, items=2000, interactions=100_000, seed=1))
        rows += compare(
            "demo-100k", featurize(read_dataset_group(work / "demo100k"), OPTIONS), [HRNN, UserPersonalization]
        )
        results["quality"] = rows
        print(json.dumps(rows, indent=1), flush=True)
        spec = (
            DemoSpec(users=3333, items=2000, interactions=100_000, seed=2)
            if quick
            else DemoSpec(users=33_333, items=10_000, interactions=1_000_000, seed=1)
        )
        results["update_vs_full"] = update_vs_full(work / "update", spec)
        print(json.dumps(results["update_vs_full"], indent=1), flush=True)
        sim = run_simulation(
            SimulationConfig(), work / "simulation", log=lambda m: print(m, file=sys.stderr, flush=True)
        )
    (HERE / "exploration_results.json").write_text(json.dumps(sim, indent=2) + "\n")
    (HERE / "exploration.png").write_bytes(plot_simulation(sim))
    results["exploration"] = {w: {k: v for k, v in s.items() if k != "rounds"} for w, s in sim["weights"].items()}
    (HERE / "user_personalization_results.json").write_text(json.dumps(results, indent=2) + "\n")
    cols = ["dataset", "recipe", *KEYS, "ndcg10_vs_popularity", "train_s"]
    print("| " + " | ".join(cols) + " |")
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    print(json.dumps(results["exploration"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
