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
    for ax, family in zip(axes[0], families):
        ks = sorted(int(n.rsplit("_at_", 1)[1]) for n in metrics if n.startswith(family + "_at_"))
        ax.plot(ks, [metrics[f"{family}_at_{k}"] for k in ks], marker="o", label=recipe)
        ax.plot(ks, [baseline.get(f"{family}_at_{k}", float("nan")) for k in ks], marker="s", linestyle="--", label="popularity")
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
