"""Cost per training event of aws-user-personalization's mini-batches (issue 17), variants
interleaved in one process so that the machine's load hits them alike.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python bench/up_batch_cost.py FEATURES_DIR 10 \\
        random-notable buckets buckets-fused

FEATURES_DIR: saved features (``save_features``) of e.g. the 1M demo
(``personalize-pipeline demo-data --out DIR --users 33333 --items 10000 --interactions 1000000
--seed 1``). Variants: ``random*`` random mini-batches padded to ``bptt``, otherwise length
buckets trimmed to their longest window; ``*notable`` without the per-batch item table (the
item tower runs once per lookup, as before); ``*fused`` Adam's fused kernel.
"""

import os
import sys
import time

import numpy as np
import torch

from personalize_pipeline.features import load_features
from personalize_pipeline.recipes.negatives import PopularitySampler
from personalize_pipeline.recipes.training_loop import bucketed_batches
from personalize_pipeline.recipes.user_personalization import UserPersonalization


def main() -> None:
    features, n, variants = load_features(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    recipe = UserPersonalization()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train = recipe.training_set(features)
    recipe._catalogue(features, train)
    recipe._prepare(train, keep_layouts=False)
    net = recipe.net = recipe._network(train.n_items)
    windows = recipe._windows(train)
    table = net.encoder.batch_table
    current = {"variant": ""}
    net.encoder.batch_table = lambda n_, rows: table(n_, 0 if current["variant"].endswith("notable") else rows)
    lengths = (windows.targets >= 0).sum(dim=1).numpy()
    shuffled = np.array_split(rng.permutation(len(windows)), len(windows) // 256)[:n]
    by_kind = {
        "random": [torch.from_numpy(b) for b in shuffled],
        "buckets": [torch.from_numpy(b) for b in bucketed_batches(lengths, 256, rng)][:n],
    }
    sampler = PopularitySampler(
        recipe.fit_state.popularity, recipe.negatives(windows.n_events), 0.75, rng, cache_batches=1
    )
    optimizers = {fused: torch.optim.Adam(net.parameters(), lr=0.003, fused=fused) for fused in (False, True)}
    net.train()
    cost: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(3):
        for v in variants:
            current["variant"] = v
            kind = "random" if v.startswith("random") else "buckets"
            optimizer = optimizers["fused" in v]
            start, events = time.perf_counter(), 0
            for idx in by_kind[kind]:
                width = 32 if kind == "random" else int(lengths[idx.numpy()].max())
                loss_vec, w = recipe._batch_loss(
                    windows, idx, sampler, sampler.log_q, False, torch.device("cpu"), width
                )
                optimizer.zero_grad()
                ((loss_vec * w).sum() / w.sum()).backward()
                optimizer.step()
                events += len(loss_vec)
            cost[v].append((time.perf_counter() - start) / events * 1e6)
    load = os.getloadavg()[0]
    for v in variants:
        print(f"{v}: {np.median(cost[v]):.1f} us per training event (median of 3; load {load:.1f})")


if __name__ == "__main__":
    main()
