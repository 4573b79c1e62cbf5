"""Exploration simulation (aws-user-personalization) on the demo world, as an on-demand asset.

Not part of the scheduled jobs: run the ``simulate_exploration`` job from the UI to see,
round by round, what exploration weights 0 / 0.3 / 0.8 do to clicks, new items and coverage."""

import base64
import tempfile

import dagster as dg

from personalize_pipeline.demo_data import DemoSpec
from personalize_pipeline.markdown_tables import table_markdown
from personalize_pipeline.simulation import SimulationConfig, plot_simulation, run_simulation

from .metadata import CODE_VERSION, floats


class ExplorationSimulationConfig(dg.Config):
    users: int = 1500
    items: int = 1500
    interactions: int = 45_000
    rounds: int = 5
    users_per_round: int = 1000
    weights: list[float] = [0.0, 0.3, 0.8]
    item_age_cut_off: float = 30.0
    hyperparameters: dict[str, str] = {}


@dg.asset(
    group_name="insight",
    code_version=CODE_VERSION,
    kinds={"pytorch"},
    description=(
        "Offline simulation of item exploration: batch recommend → simulated clicks (demo ground truth) → UPDATE, "
        "per round and exploration weight."
    ),
)
def exploration_simulation(
    context: dg.AssetExecutionContext, config: ExplorationSimulationConfig
) -> dg.MaterializeResult:
    sim = SimulationConfig(
        spec=DemoSpec(users=config.users, items=config.items, interactions=config.interactions, seed=7),
        weights=tuple(config.weights),
        rounds=config.rounds,
        users_per_round=config.users_per_round,
        item_age_cut_off=config.item_age_cut_off,
        hyperparameters=dict(config.hyperparameters),
    )
    with tempfile.TemporaryDirectory(prefix="exploration-") as work:
        results = run_simulation(sim, work, log=context.log.info)
    rows = [{"weight": w, **{k: v for k, v in s.items() if k != "rounds"}} for w, s in results["weights"].items()]
    per_round = [{"weight": w, **r} for w, s in results["weights"].items() for r in s["rounds"]]
    png = base64.b64encode(plot_simulation(results)).decode()
    metadata = {
        "summary": dg.MetadataValue.md(table_markdown(rows)),
        "rounds": dg.MetadataValue.md(table_markdown(per_round)),
        "plot": dg.MetadataValue.md(f"![exploration](data:image/png;base64,{png})"),
        "seconds": results["seconds"],
    }
    for w, s in results["weights"].items():
        metadata.update(floats({k: v for k, v in s.items() if k != "rounds"}, prefix=f"weight_{w}/"))
    return dg.MaterializeResult(metadata=metadata)


exploration_simulation_job = dg.define_asset_job(
    "simulate_exploration",
    selection=dg.AssetSelection.assets(exploration_simulation),
    description="Run the exploration simulation on the demo world (minutes; not scheduled).",
)
