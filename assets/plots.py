"""Small matplotlib plots embedded in materialization metadata (base64 PNG in markdown)."""

import base64
import io

import dagster as dg


def _png_markdown(fig, alt: str) -> dg.MetadataValue:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})")


def metrics_by_k(metrics: dict[str, float], baseline: dict[str, float], recipe: str) -> dg.MetadataValue:
    """Each metric family at K = 5, 10, 25 for the recipe and the popularity baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = sorted({name.rsplit("_at_", 1)[0] for name in metrics if "_at_" in name})
    fig, axes = plt.subplots(1, len(families), figsize=(3.2 * len(families), 2.6), squeeze=False)
    for ax, family in zip(axes[0], families, strict=True):
        ks = sorted(int(n.rsplit("_at_", 1)[1]) for n in metrics if n.startswith(family + "_at_"))
        ax.plot(ks, [metrics[f"{family}_at_{k}"] for k in ks], marker="o", label=recipe)
        ax.plot(
            ks,
            [baseline.get(f"{family}_at_{k}", float("nan")) for k in ks],
            marker="s",
            linestyle="--",
            label="popularity",
        )
        ax.set_title(family.replace("normalized_discounted_cumulative_gain", "NDCG").replace("_", " "), fontsize=9)
        ax.set_xlabel("K")
        ax.set_xticks(ks)
    axes[0][0].legend(fontsize=7)
    return _png_markdown(fig, "metrics by K")


def loss_curve(losses: list[float]) -> dg.MetadataValue:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2.6))
    ax.plot(range(1, len(losses) + 1), losses, marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("sampled-softmax loss")
    return _png_markdown(fig, "training loss")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def hpo_trials(trials: list[dict], metric: str) -> dg.MetadataValue:
    """Each HPO trial's validation metric, the running best, and the defaults (trial 0)."""
    plt = _plt()
    done = [t for t in trials if t.get("value") is not None]
    numbers = [t["number"] + 1 for t in done]
    values = [t["value"] for t in done]
    best, running = float("-inf"), []
    for v in values:
        best = max(best, v)
        running.append(best)
    fig, ax = plt.subplots(figsize=(4.6, 2.8))
    ax.scatter(numbers, values, s=18, label="trial")
    ax.step(numbers, running, where="post", color="C2", label="best so far")
    defaults = [t for t in done if t.get("defaults")]
    if defaults:
        ax.axhline(defaults[0]["value"], color="C3", linestyle="--", linewidth=1, label="defaults")
    ax.set_xlabel("training job")
    ax.set_ylabel(metric.replace("normalized_discounted_cumulative_gain", "NDCG").replace("_", " "), fontsize=8)
    ax.legend(fontsize=7)
    return _png_markdown(fig, "HPO trials")


def lift_over_popularity(lift: dict[str, float | None]) -> dg.MetadataValue:
    """Relative lift of each metric over the popularity baseline (0 = as good as popularity)."""
    plt = _plt()
    known = {k: v for k, v in lift.items() if v is not None}
    names = list(known)
    values = [100.0 * v for v in known.values()]
    fig, ax = plt.subplots(figsize=(5, 0.28 * len(names) + 0.8))
    short = [
        n.replace("normalized_discounted_cumulative_gain", "NDCG")
        .replace("mean_reciprocal_rank", "MRR")
        .replace("_at_", "@")
        for n in names
    ]
    ax.barh(short, values, color=["C2" if v >= 0 else "C3" for v in values])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("lift over popularity (%)")
    ax.tick_params(axis="y", labelsize=7)
    return _png_markdown(fig, "lift over popularity")


def popularity_long_tail(counts) -> dg.MetadataValue:
    """Interactions per item, most popular first (log scale), with the head / torso / tail
    boundaries (50% and 80% of the events)."""
    import numpy as np

    plt = _plt()
    counts = np.sort(np.asarray(counts))[::-1]
    fig, ax = plt.subplots(figsize=(4.6, 2.8))
    ranks = np.arange(1, len(counts) + 1)
    ax.plot(ranks, np.maximum(counts, 0.8), linewidth=1.2)
    ax.set_yscale("log")
    share = np.cumsum(counts) / max(counts.sum(), 1)
    for frac, name in ((0.5, "50% of events"), (0.8, "80%")):
        rank = int(np.searchsorted(share, frac)) + 1
        ax.axvline(rank, color="grey", linestyle=":", linewidth=1)
        ax.text(rank, counts.max(), f" {name}\n (top {rank})", fontsize=6, va="top")
    ax.set_xlabel("item rank by popularity")
    ax.set_ylabel("interactions")
    return _png_markdown(fig, "popularity long tail")


def segment_recall(segments: dict, baseline: dict, recipe: str) -> dg.MetadataValue:
    """Recall@10 per item-popularity segment and NDCG@10 per user-history segment, recipe
    against popularity."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(7.4, 2.6))
    for ax, family, key, title in (
        (axes[0], "items_by_popularity", "recall_at_10", "recall@10 by item popularity"),
        (axes[1], "users_by_history_length", "normalized_discounted_cumulative_gain_at_10", "NDCG@10 by user history"),
    ):
        rows = segments.get(family, [])
        base = {r["segment"]: r.get(key, 0.0) for r in baseline.get(family, [])}
        labels = [r["segment"].replace("history ", "") for r in rows]
        x = range(len(rows))
        ax.bar([i - 0.2 for i in x], [r.get(key, 0.0) for r in rows], width=0.4, label=recipe)
        ax.bar([i + 0.2 for i in x], [base.get(r["segment"], 0.0) for r in rows], width=0.4, label="popularity")
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    return _png_markdown(fig, "metrics by segment")


def attribution_by_day(report) -> dg.MetadataValue:
    """Per attribution source and day: events, and the sum of EVENT_VALUE (all event types)."""
    plt = _plt()
    daily = (
        report.groupby(["day", "source"])[["events", "event_value_sum"]]
        .sum()
        .unstack("source", fill_value=0)
        .sort_index()
    )
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.8))
    for ax, column, title in ((axes[0], "events", "events"), (axes[1], "event_value_sum", "sum of EVENT_VALUE")):
        for source in daily[column].columns:
            ax.plot(
                range(len(daily)),
                daily[column][source].to_numpy(),
                marker="o" if len(daily) < 40 else None,
                markersize=3,
                label=str(source)[:24],
            )
        ticks = list(range(0, len(daily), max(1, len(daily) // 6)))
        ax.set_xticks(ticks)
        ax.set_xticklabels([daily.index[i] for i in ticks], fontsize=6, rotation=30)
        ax.set_title(title + " per day", fontsize=9)
    axes[0].legend(fontsize=6)
    return _png_markdown(fig, "metric attribution by day")
