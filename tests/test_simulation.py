"""The exploration simulation: exploration discovers new items faster, at a bounded cost in clicks."""

import pytest

from personalize_pipeline.demo_data import DemoSpec
from personalize_pipeline.simulation import SimulationConfig, plot_simulation, run_simulation

pytestmark = pytest.mark.slow  # the module's fixture trains models for several rounds

SMALL = SimulationConfig(
    spec=DemoSpec(users=400, items=500, interactions=10_000, seed=7),
    weights=(0.0, 0.8),
    rounds=3,
    users_per_round=300,
    hyperparameters={"hidden_dimension": 32, "epochs": 3},
)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_simulation(SMALL, tmp_path_factory.mktemp("sim"))


def test_exploration_brings_new_items_in_faster(results):
    zero, explore = results["weights"]["0.0"], results["weights"]["0.8"]
    assert len(zero["rounds"]) == len(explore["rounds"]) == 3
    assert explore["rounds"][-1]["new_items_available"] > 0
    assert explore["mean_new_item_share"] > 3 * max(zero["mean_new_item_share"], 0.01)
    assert explore["new_items_discovered"] > zero["new_items_discovered"]
    # bounded cost: weight 0.8 gives up at most a third of the clicks of pure relevance
    assert explore["clicks_vs_first_weight"] > 0.67
    # UPDATE rounds are cheap next to the FULL training
    assert explore["mean_update_seconds"] < results["full_train_seconds"]


def test_plot_is_a_png(results):
    assert plot_simulation(results)[:8] == b"\x89PNG\r\n\x1a\n"
