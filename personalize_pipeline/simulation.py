"""Offline simulation of item exploration (aws-user-personalization) on the demo world.

The demo generator knows every user's true click probability for every item
(:meth:`~personalize_pipeline.demo_data.DemoWorld.affinity`), so exploration can be judged
the way it is used: a FULL solution version is trained on the data up to a cut-off time,
and then, round after round, for each exploration weight:

1. batch recommendations (``num_results`` items) for a sample of users, with
   ``itemExplorationConfig`` = (weight, age cut-off);
2. simulated users look down their list (position bias ``1 / log2(rank + 2)``) and click
   each item they look at with its true probability;
3. the clicks are appended as interactions, with the list as their IMPRESSION, the items
   created in the meantime join the Items dataset, and an UPDATE folds everything in.

Each round reports clicks, the share of list slots given to new items (created after the
cut-off), clicks on new items, how many new items have been discovered (clicked at least
once) so far, and catalogue coverage. Every weight starts from the same FULL version and
sees the same users in the same round.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .datasets import read_dataset_group
from .demo_data import DemoSpec, DemoWorld, build_world, generate
from .features import featurize
from .recipes import ExplorationConfig, UserRecommender
from .store import load_solution_version
from .training import SolutionConfig, train

DAY = 86_400


@dataclass
class SimulationConfig:
    spec: DemoSpec = field(default_factory=lambda: DemoSpec(users=1500, items=1500, interactions=45_000, seed=7))
    weights: tuple[float, ...] = (0.0, 0.3, 0.8)
    rounds: int = 5
    simulated_days: float = 20.0  # the end of the timeline is replaced by the simulation
    users_per_round: int = 1000
    num_results: int = 25
    item_age_cut_off: float = 30.0
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


def write_group_as_of(folder: Path, source: Path, interactions: pd.DataFrame, items: pd.DataFrame, until: int) -> None:
    """A dataset group as of time ``until``: the given interactions, the items created at or
    before ``until``, and ``source``'s users and schemas."""
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(source / "schemas", folder / "schemas")
    shutil.copy(source / "users.csv", folder / "users.csv")
    interactions.to_csv(folder / "interactions.csv", index=False)
    items[items["CREATION_TIMESTAMP"].astype(np.int64) <= until].to_csv(folder / "items.csv", index=False)


def split_as_of(source: Path, folder: Path, cut: int) -> None:
    """``source`` (a dataset group of CSV files) as it was just before ``cut``: earlier events
    only, items created later absent (when items have a CREATION_TIMESTAMP); users and
    schemas copied. Streams the CSV files through Arrow in blocks (memory stays flat)."""
    source, folder = Path(source), Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if (source / "schemas").is_dir():
        shutil.copytree(source / "schemas", folder / "schemas")
    if (source / "users.csv").exists():
        shutil.copy(source / "users.csv", folder / "users.csv")
    _filter_csv(source / "interactions.csv", folder / "interactions.csv", "TIMESTAMP", cut)
    if (source / "items.csv").exists():
        _filter_csv(source / "items.csv", folder / "items.csv", "CREATION_TIMESTAMP", cut)


def _filter_csv(source: Path, target: Path, column: str, cut: int) -> None:
    """Copy the rows of ``source`` whose integer ``column`` is below ``cut`` (every row when
    there is no such column), values kept as text."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    header = pacsv.open_csv(source, read_options=pacsv.ReadOptions(block_size=1 << 16)).schema.names
    if column not in header:
        shutil.copy(source, target)
        return
    reader = pacsv.open_csv(
        source,
        read_options=pacsv.ReadOptions(block_size=1 << 24),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in header}, strings_can_be_null=False),
    )
    with pacsv.CSVWriter(target, reader.schema) as writer:
        for batch in reader:
            keep = pc.less(pc.cast(pc.utf8_trim_whitespace(batch.column(column)), pa.int64()), cut)
            writer.write_batch(batch.filter(keep))


@dataclass(frozen=True)
class _Setting:
    """What every exploration weight shares: the world, its files, the cut-off and round
    length (seconds), the history before the cut-off and the solution configuration."""

    config: SimulationConfig
    work: Path
    world: DemoWorld
    source: Path  # the generated dataset group
    items: pd.DataFrame  # its items, as text
    history: pd.DataFrame  # its interactions before the cut-off, as text
    cut: int
    step: int
    solution_config: SolutionConfig
    world_index: pd.Index  # item id -> world item index
    is_new: np.ndarray  # per world item: created at or after the cut-off


@dataclass(frozen=True)
class _Lists:
    """One round's recommendation lists and the simulated clicks on them."""

    users: np.ndarray  # world user indices, sorted
    listed: np.ndarray  # item ids [users, num_results]; an empty slot holds the version's first item
    rec_world: np.ndarray  # world item index of each slot
    valid: np.ndarray  # slots that hold a recommendation
    p: np.ndarray  # click probability of each slot (0 where not valid)
    clicked: np.ndarray


def run_simulation(
    config: SimulationConfig, work_dir: str | Path, log: Callable[[str], None] = lambda _m: None
) -> dict[str, Any]:
    """Run the simulation in ``work_dir`` (scratch space); return per-round figures."""
    start = time.perf_counter()
    setting = _set_up(config, Path(work_dir))
    full_seconds = _train_as_of(setting, setting.history, setting.cut, setting.work / "full", "FULL")
    log(f"FULL on {len(setting.history)} interactions before the cut-off: {full_seconds:.1f}s")

    results: dict[str, Any] = {
        "weights": {},
        "config": _describe(config),
        "cut_off": setting.cut,
        "full_train_seconds": round(full_seconds, 2),
    }
    for weight in config.weights:
        results["weights"][str(weight)] = _simulate_weight(setting, weight, log)
    base = results["weights"].get(str(config.weights[0]), {}).get("total_clicks") or 1
    for summary in results["weights"].values():
        summary["clicks_vs_first_weight"] = round(summary["total_clicks"] / base, 4)
    results["seconds"] = round(time.perf_counter() - start, 2)
    return results


def _set_up(config: SimulationConfig, work: Path) -> _Setting:
    """Generate the demo dataset group into ``work / "world"`` and keep its history before
    the cut-off (``simulated_days`` before the end of the timeline)."""
    spec = config.spec
    world = build_world(spec)
    source = work / "world"
    generate(source, spec)
    inter = pd.read_csv(source / "interactions.csv", dtype=str, keep_default_na=False)
    items = pd.read_csv(source / "items.csv", dtype=str, keep_default_na=False)
    cut = int(spec.end - config.simulated_days * DAY)
    step = int(config.simulated_days * DAY / config.rounds)
    return _Setting(
        config=config,
        work=work,
        world=world,
        source=source,
        items=items,
        history=inter[inter["TIMESTAMP"].astype(np.int64) < cut].reset_index(drop=True),
        cut=cut,
        step=step,
        solution_config=SolutionConfig("aws-user-personalization", dict(config.hyperparameters)),
        world_index=pd.Index(world.item_ids),
        is_new=world.item_created >= cut,
    )


def _simulate_weight(setting: _Setting, weight: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Play every round with exploration weight ``weight``, starting from a copy of the FULL
    version (an UPDATE after each round); return the weight's rounds and summary."""
    solution = setting.work / f"weight-{weight}"
    if solution.exists():
        shutil.rmtree(solution)
    shutil.copytree(setting.work / "full", solution)
    events = setting.history
    discovered: set[int] = set()
    rounds = []
    update_seconds = []
    for r in range(setting.config.rounds):
        now = setting.cut + r * setting.step
        figures, new_events = _play_round(setting, solution, weight, r, discovered)
        rounds.append(figures)
        # the clicks become interactions, the lists their impressions; then UPDATE
        events = pd.concat([events, new_events[events.columns]], ignore_index=True)
        update_seconds.append(_train_as_of(setting, events, now + setting.step, solution, "UPDATE"))
        log(f"weight {weight} round {r + 1}: {rounds[-1]}")
    return _summarise(rounds, update_seconds)


def _play_round(
    setting: _Setting, solution: Path, weight: float, r: int, discovered: set[int]
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Round ``r`` (0-based) with exploration weight ``weight``: lists for a sample of users,
    their clicks. Adds the new items clicked to ``discovered``; returns the round's figures
    and the clicks as interactions."""
    rng = np.random.default_rng([setting.config.seed, r])  # same users and clicks draws for every weight
    lists = _recommend_and_click(setting, solution, weight, r, rng)
    new_slots = setting.is_new[lists.rec_world] & lists.valid
    discovered.update(lists.rec_world[lists.clicked & new_slots].tolist())
    figures = _round_figures(setting, r, lists, new_slots, len(discovered))
    return figures, _click_events(setting, lists, setting.cut + r * setting.step, rng)


def _recommend_and_click(setting: _Setting, solution: Path, weight: float, r: int, rng: np.random.Generator) -> _Lists:
    """Batch recommendations from the version in ``solution`` for a sample of users (drawn
    from ``rng``), with exploration; each user looks down the list (position bias
    ``1 / log2(rank + 2)``) and clicks each item looked at with its true probability."""
    config, world = setting.config, setting.world
    users = np.sort(rng.choice(config.spec.users, size=min(config.users_per_round, config.spec.users), replace=False))
    version = load_solution_version(str(solution))
    codes = version.user_codes(world.user_ids[users])
    exploration = ExplorationConfig(weight, config.item_age_cut_off, seed=config.seed + r)
    recipe = version.recipe
    assert isinstance(recipe, UserRecommender) and recipe.supports_exploration  # aws-user-personalization
    recs, _ = recipe.recommend(version.user_batch(codes), config.num_results, exploration=exploration)
    valid = recs >= 0
    listed = version.item_ids[np.maximum(recs, 0)]
    rec_world = setting.world_index.get_indexer(listed.ravel()).reshape(recs.shape)
    look = 1.0 / np.log2(np.arange(recs.shape[1]) + 2.0)
    p = world.affinity(users[:, None], rec_world) * look[None, :] * valid
    clicked = rng.random(p.shape) < p
    return _Lists(users=users, listed=listed, rec_world=rec_world, valid=valid, p=p, clicked=clicked)


def _round_figures(setting: _Setting, r: int, lists: _Lists, new_slots: np.ndarray, discovered: int) -> dict[str, Any]:
    """The figures of round ``r`` (0-based); ``new_slots`` marks the slots holding a new
    item, ``discovered`` counts the new items clicked so far."""
    world, clicked, valid = setting.world, lists.clicked, lists.valid
    now = setting.cut + r * setting.step
    catalogue = int((world.item_created <= now).sum())
    return {
        "round": r + 1,
        "clicks": int(clicked.sum()),
        "clicks_per_user": round(float(clicked.sum()) / len(lists.users), 4),
        "expected_clicks": round(float(lists.p.sum()), 2),
        "new_item_share": round(float(new_slots.sum() / max(valid.sum(), 1)), 4),
        "new_item_clicks": int((clicked & new_slots).sum()),
        "new_items_discovered": discovered,
        "new_items_available": int((setting.is_new & (world.item_created <= now)).sum()),
        "coverage": round(len(np.unique(lists.rec_world[valid])) / catalogue, 4),
    }


def _click_events(setting: _Setting, lists: _Lists, now: int, rng: np.random.Generator) -> pd.DataFrame:
    """The clicks as interactions at random times in the round starting at ``now``, each with
    its whole list as IMPRESSION."""
    world, users = setting.world, lists.users
    rows, cols = np.nonzero(lists.clicked)
    shown = np.array(["|".join(x) for x in lists.listed.tolist()], dtype=object)
    return pd.DataFrame(
        {
            "USER_ID": world.user_ids[users[rows]],
            "ITEM_ID": world.item_ids[lists.rec_world[rows, cols]],
            "TIMESTAMP": (now + rng.integers(0, setting.step, size=len(rows))).astype(str),
            "EVENT_TYPE": "click",
            "EVENT_VALUE": "1.0",
            "IMPRESSION": shown[rows],
            "DEVICE": np.array(["mobile", "desktop", "tv"])[world.user_device[users[rows]]],
        }
    )


def _train_as_of(setting: _Setting, events: pd.DataFrame, until: int, solution: Path, mode: str) -> float:
    """Write the dataset group as of ``until`` (``events``, the items created by then) and
    train a ``mode`` (FULL or UPDATE) version of it into ``solution``; return its seconds."""
    write_group_as_of(setting.work / "data", setting.source, events, setting.items, until)
    t0 = time.perf_counter()
    train(featurize(read_dataset_group(str(setting.work / "data"))), setting.solution_config, str(solution), mode)
    return time.perf_counter() - t0


def _summarise(rounds: list[dict[str, Any]], update_seconds: list[float]) -> dict[str, Any]:
    """A weight's rounds and their totals and means."""
    return {
        "rounds": rounds,
        "total_clicks": sum(x["clicks"] for x in rounds),
        "new_items_discovered": rounds[-1]["new_items_discovered"] if rounds else 0,
        "mean_new_item_share": round(float(np.mean([x["new_item_share"] for x in rounds])), 4) if rounds else 0.0,
        "mean_coverage": round(float(np.mean([x["coverage"] for x in rounds])), 4) if rounds else 0.0,
        "mean_update_seconds": round(float(np.mean(update_seconds)), 3) if update_seconds else None,
    }


def _describe(config: SimulationConfig) -> dict[str, Any]:
    out = asdict(config)
    out["weights"] = list(config.weights)
    return out


def plot_simulation(results: dict[str, Any]) -> bytes:
    """PNG: per round, clicks per user, share of new items in the lists and new items discovered."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("clicks_per_user", "clicks per user"),
        ("new_item_share", "share of new items in lists"),
        ("new_items_discovered", "new items discovered"),
        ("coverage", "catalogue coverage"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for weight, summary in results["weights"].items():
            rounds = summary["rounds"]
            ax.plot([x["round"] for x in rounds], [x[key] for x in rounds], marker="o", label=f"weight {weight}")
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


__all__ = ["SimulationConfig", "run_simulation", "plot_simulation", "write_group_as_of", "split_as_of"]
