"""The on-demand exploration simulation asset records per-weight figures and a plot."""

import dagster as dg

from assets.simulation import ExplorationSimulationConfig, exploration_simulation


def test_exploration_simulation_asset_metadata():
    config = ExplorationSimulationConfig(
        users=300,
        items=400,
        interactions=7000,
        rounds=2,
        users_per_round=200,
        weights=[0.0, 0.5],
        hyperparameters={"hidden_dimension": "32", "epochs": "2"},
    )
    result = dg.materialize(
        [exploration_simulation], run_config={"ops": {"exploration_simulation": {"config": config.model_dump()}}}
    )
    assert result.success
    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert "data:image/png;base64," in metadata["plot"].value
    assert metadata["weight_0.5/mean_new_item_share"].value >= metadata["weight_0.0/mean_new_item_share"].value
    assert "new_items_discovered" in metadata["summary"].value
