"""Figures and the README section of ``bench/run.py`` (``make bench``) from its results.

``write(payload, folder)`` draws ``stage_times.png``, ``scaling.png`` and ``peak_rss.png``
and replaces the part of ``README.md`` between the ``make-bench`` markers;
``.venv/bin/python bench/report.py`` redraws them from ``bench/results.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MARK_START, MARK_END = "<!-- make-bench:start -->", "<!-- make-bench:end -->"
STAGES = ("read", "validate", "featurize")
RECIPE_STAGES = (("full_s", "FULL"), ("update_s", "UPDATE"), ("evaluate_s", "evaluation"), ("batch_s", "batch"))


def _fmt(value, digits: int = 1) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) >= 0.1 or value == 0 else f"{value:.4f}"
    return str(value)


def _q(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in row) + " |" for row in rows]
    return "\n".join(lines)


def plots(payload: dict, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in payload["datasets"] if "stages" in r]
    names = []
    # 1. time per stage per dataset (pipeline stages, and per recipe summed over recipes)
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.8 * max(len(rows), 1)))
    labels = list(STAGES) + [label for _, label in RECIPE_STAGES]
    colors = plt.get_cmap("tab10").colors
    for i, row in enumerate(rows):
        values = [row["stages"].get(s, {}).get("seconds", 0.0) for s in STAGES]
        values += [sum(rec.get(key) or 0.0 for rec in row.get("recipes", [])) for key, _ in RECIPE_STAGES]
        left = 0.0
        for j, v in enumerate(values):
            ax.barh(i, v, left=left, color=colors[j % 10], label=labels[j] if i == 0 else None)
            left += v
        ax.text(left, i, f" {left:,.0f} s", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{r['dataset']}\n({len(r.get('recipes', []))} recipes)" for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("seconds (FULL, UPDATE, evaluation and batch summed over the dataset's recipes)")
    ax.set_title("Time per stage")
    ax.legend(fontsize=8, ncol=len(labels), loc="upper center", bbox_to_anchor=(0.5, -0.28), frameon=False)
    fig.tight_layout()
    fig.savefig(folder / "stage_times.png", dpi=110)
    plt.close(fig)
    names.append("stage_times.png")

    # 2. scaling: seconds vs interactions (log-log, with slope-1 reference) for the demo sizes
    demo = sorted([r for r in rows if r["dataset"].startswith("demo-")], key=lambda r: r["interactions"])
    if len(demo) >= 2:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        n = [r["interactions"] for r in demo]
        series = {s: [r["stages"].get(s, {}).get("seconds") for r in demo] for s in STAGES}
        for recipe in ("aws-popularity-count", "aws-hrnn"):
            series[f"{recipe} FULL (train)"] = [_rec(r, recipe).get("full_train_s") for r in demo]
            series[f"{recipe} batch (job)"] = [_rec(r, recipe).get("batch_job_s") for r in demo]
        for label, ys in series.items():
            pts = [(x, y) for x, y in zip(n, ys, strict=True) if y]
            if len(pts) >= 2:
                ax1.plot(*zip(*pts, strict=True), marker="o", label=label)
        ref = [(x, series["featurize"][0] * x / n[0]) for x in n] if series["featurize"][0] else []
        if ref:
            ax1.plot(*zip(*ref, strict=True), "k--", lw=0.8, label="linear from featurize at the smallest size")
        ax1.set_xscale("log"), ax1.set_yscale("log")
        ax1.set_xlabel("interactions"), ax1.set_ylabel("seconds")
        ax1.set_title("Seconds vs size (parallel to the dashed line = linear)")
        ax1.legend(fontsize=7)
        tput = {
            "read (interactions/s)": [r["interactions"] / r["stages"]["read"]["seconds"] for r in demo],
            "validate (interactions/s)": [r["interactions"] / r["stages"]["validate"]["seconds"] for r in demo],
            "featurize (interactions/s)": [r.get("featurize_interactions_per_s") for r in demo],
            "aws-hrnn FULL (events/s)": [_rec(r, "aws-hrnn").get("full_events_per_s") for r in demo],
            "aws-hrnn batch (users/s)": [_rec(r, "aws-hrnn").get("batch_per_s") for r in demo],
        }
        for label, ys in tput.items():
            pts = [(x, y) for x, y in zip(n, ys, strict=True) if y]
            if pts:
                ax2.plot(*zip(*pts, strict=True), marker="o", label=label)
        ax2.axhline(1_000_000, color="grey", ls=":", lw=0.8)
        ax2.axhline(50_000, color="grey", ls=":", lw=0.8)
        ax2.set_xscale("log"), ax2.set_yscale("log")
        ax2.set_xlabel("interactions"), ax2.set_title("Throughput vs size (flat = linear time)")
        ax2.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "scaling.png", dpi=110)
        plt.close(fig)
        names.append("scaling.png")

    # 3. peak RSS vs size
    fig, ax = plt.subplots(figsize=(6.5, 4))
    pts = sorted(
        (r["interactions"], r.get("peak_rss_mb_after_featurize"), r.get("peak_rss_mb"), r["dataset"]) for r in rows
    )
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label="read + validate + featurize")
    ax.plot([p[0] for p in pts], [p[2] for p in pts], marker="s", label="end to end (all recipes)")
    ax.axhline(2048, color="red", ls="--", lw=0.8, label="2 GiB")
    ax.set_xscale("log")
    ax.set_xlabel("interactions"), ax.set_ylabel("peak RSS of the dataset's process (MB)")
    ax.set_title("Peak memory vs size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "peak_rss.png", dpi=110)
    plt.close(fig)
    names.append("peak_rss.png")
    return names


def _rec(row: dict, recipe: str) -> dict:
    for rec in row.get("recipes", []):
        if rec["recipe"] == recipe:
            return rec
    return {}


def section(payload: dict, images: list[str]) -> str:
    m = payload["machine"]
    rows = [r for r in payload["datasets"] if "stages" in r]
    out = [
        MARK_START,
        "<!-- generated by bench/run.py (bench/report.py); edits here are overwritten -->",
        "## `make bench`: the whole pipeline on " + ", ".join(r["dataset"] for r in rows),
        "",
        f"Command: `{payload['command']}` — {payload['date']}, {m['cpus']} CPUs, {m.get('memory_gib', '?')} GiB, "
        f"Python {m['python']}, torch {m['torch']}, pyarrow {m['pyarrow']}, OMP_NUM_THREADS {m['omp_num_threads']}, "
        f"load average at start {m['load_average_at_start']}. Whole run: {payload['wall_s'] / 60:.1f} min. "
        "Results: `bench/results.json`.",
        "",
        "Each dataset runs in its own process (peak RSS is that process's high-water mark). "
        f"The newest {100 * payload['holdout_for_update']:.0f}% of events are held back: FULL trains on the rest, "
        "UPDATE on everything. Evaluation is leave-last-out over all items with the popularity baseline trained and "
        "scored on the same split. Batch inference: every user (aws-sims: every item; aws-personalized-ranking: "
        "every user with 50 items to rank), top 25; the other neural recipes' job repeats every user to at least "
        "200k lines (at 10M: the first 20k users); lines/s are net of the job's start-up (loading the version, "
        "building the handler, loading the compiled loops).",
        "",
        "### Targets",
        "",
    ]
    trows = []
    for t in payload["targets"]:
        met = "n/a" if t["met"] is None else ("**met**" if t["met"] else "**missed**")
        ratio = (
            ""
            if t["ratio"] is None
            else (
                f"{t['ratio']:.2f}x the limit"
                if t["unit"] in ("s", "MB", "% of FULL")
                else f"{1 / t['ratio']:.2f}x the target"
            )
        )
        trows.append(
            [t["target"], t["where"], "" if t["value"] is None else f"{_fmt(t['value'])} {t['unit']}", met, ratio]
        )
    out.append(_table(["target", "dataset", "measured", "", "measured / target"], trows))
    out += ["", "### Pipeline stages per dataset", ""]
    drows = []
    for r in rows:
        st = r["stages"]
        drows.append(
            [
                r["dataset"],
                r["interactions"],
                r.get("users"),
                r.get("items"),
                r.get("generate_s"),
                st["read"]["seconds"],
                st["validate"]["seconds"],
                st["featurize"]["seconds"],
                r.get("featurize_interactions_per_s"),
                r.get("peak_rss_mb_after_featurize"),
                r.get("peak_rss_mb"),
                r.get("wall_s"),
            ]
        )
    out.append(
        _table(
            [
                "dataset",
                "interactions",
                "users",
                "items",
                "generate s",
                "read s",
                "validate s",
                "featurize s",
                "featurize interactions/s",
                "peak RSS after featurize MB",
                "peak RSS end to end MB",
                "dataset wall s",
            ],
            drows,
        )
    )
    out += ["", "### Recipes", ""]
    rrows = []
    for r in rows:
        for rec in r.get("recipes", []):
            if "error" in rec:
                rrows.append([r["dataset"], rec["recipe"], f"error: {rec['error']}"] + [""] * 10)
                continue
            skipped = " ".join(
                f"({what} skipped: {rec[key]})"
                for what, key in (("UPDATE", "update_skipped"), ("evaluation", "evaluate_skipped"))
                if rec.get(key)
            )
            full = _fmt(rec.get("full_train_s")) + (
                f" (budget: {rec['epochs_run']} of {rec['epochs_scheduled']} epochs)"
                if rec.get("full_budget_hit")
                else ""
            )
            rrows.append(
                [
                    r["dataset"],
                    rec["recipe"],
                    full,
                    rec.get("full_events_per_s"),
                    rec.get("epochs_run"),
                    f"{_fmt(rec.get('update_train_s'), 2)} ({100 * rec['update_over_full']:.1f}%)"
                    if rec.get("update_over_full") is not None
                    else "",
                    rec.get("evaluate_s") if not skipped else skipped,
                    _q(rec.get("ndcg_at_10")),
                    _q(rec.get("popularity_ndcg_at_10")),
                    f"{rec['ndcg_at_10_vs_popularity']:.2f}x" if rec.get("ndcg_at_10_vs_popularity") else "",
                    _q(rec.get("hr_at_10")),
                    rec.get("batch_per_s"),
                    rec.get("peak_rss_mb"),
                ]
            )
    out.append(
        _table(
            [
                "dataset",
                "recipe",
                "FULL train s",
                "FULL events/s",
                "epochs",
                "UPDATE train s (% of FULL)",
                "evaluation s",
                "NDCG@10",
                "popularity NDCG@10",
                "vs popularity",
                "HR@10",
                "batch lines/s",
                "peak RSS MB",
            ],
            rrows,
        )
    )
    budgets = sorted({json.dumps(r.get("training_budget_s", {}), sort_keys=True) for r in rows})
    out += [
        "",
        "Training budgets (`max_training_seconds` of the neural recipes; FULL / the evaluation's own fit) by dataset: "
        + "; ".join(
            f"{r['dataset']}: {r['training_budget_s'].get('full'):.0f} s / "
            f"{r['training_budget_s'].get('evaluate'):.0f} s"
            + (f", {r['training_budget_s']['epochs']} epoch(s)" if r["training_budget_s"].get("epochs") else "")
            for r in rows
            if r.get("training_budget_s")
        )
        + ". The recipes check `max_training_seconds` at the end of each epoch, so a run can pass its budget by up to"
        " one epoch; a run stopped by its budget trains fewer epochs than the automatic schedule"
        ' (shown as "budget: n of m epochs"), so its quality is a lower bound.' + ("" if len(budgets) else ""),
        "",
    ]
    out += [f"![{name}]({name})" for name in images]
    out += ["", MARK_END]
    return "\n".join(out)


def write(payload: dict, folder: Path) -> None:
    try:
        images = plots(payload, folder)
    except ImportError:
        print("matplotlib is not installed: no plots", file=sys.stderr)
        images = []
    readme = folder / "README.md"
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    block = section(payload, images)
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        tail = rest.split(MARK_END, 1)[1]
        text = head + block + tail
    else:
        lines = text.split("\n", 1)
        text = lines[0] + "\n\n" + block + "\n" + (lines[1] if len(lines) > 1 else "")
    readme.write_text(text)


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    write(json.loads((here / "results.json").read_text()), here)
