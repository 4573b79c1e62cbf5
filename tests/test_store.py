import json

import numpy as np
import pytest

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.errors import InputError
from personalize_pipeline.features import featurize
from personalize_pipeline.store import load_solution_version, read_index, resolve_version
from personalize_pipeline.training import SolutionConfig, train


@pytest.fixture(scope="module")
def features(demo_small):
    return featurize(read_dataset_group(demo_small))


def test_full_then_update_keeps_versions_and_pointers(tmp_path, features):
    config = SolutionConfig("aws-popularity-count")
    full = train(features, config, tmp_path / "sol")
    update = train(features, config, tmp_path / "sol", training_mode="UPDATE")
    index = read_index(tmp_path / "sol")
    assert index["latest"] == update.version_id
    assert index["latest_full"] == full.version_id
    assert update.manifest["base_version"] == full.version_id
    assert update.manifest["training_mode"] == "UPDATE"
    m = full.manifest
    for key in (
        "recipe",
        "hyperparameters",
        "solution_config",
        "training_mode",
        "dataset",
        "timings",
        "metrics",
        "created_at",
    ):
        assert key in m
    assert m["dataset"]["fingerprints"]["interactions"] == features.info["fingerprints"]["interactions"]
    assert m["timings"]["train_events_per_second"] > 0
    loaded = load_solution_version(tmp_path / "sol")
    assert loaded.version_id == update.version_id
    np.testing.assert_array_equal(loaded.recipe.order, full.recipe.order)
    assert list(loaded.item_ids) == list(features.item_ids)
    assert loaded.history_signals is None  # (the events' times are kept only for a recipe that reads them)
    assert load_solution_version(tmp_path / "sol", full_only=True).version_id == full.version_id


def test_update_without_full_is_refused(tmp_path, features):
    with pytest.raises(InputError, match="UPDATE needs a FULL solution version"):
        train(features, SolutionConfig(), tmp_path / "empty", training_mode="UPDATE")


def test_interrupted_version_is_invisible_and_earlier_outputs_intact(tmp_path, features, monkeypatch):
    full = train(features, SolutionConfig(), tmp_path / "sol")
    before = (tmp_path / "sol" / "solution.json").read_bytes()

    import personalize_pipeline.store as store

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store, "_update_index", boom)
    with pytest.raises(OSError):
        train(features, SolutionConfig(), tmp_path / "sol")
    assert (tmp_path / "sol" / "solution.json").read_bytes() == before
    assert resolve_version(tmp_path / "sol").name == full.version_id
    # no temporary files left next to artifacts
    leftovers = [p for p in (tmp_path / "sol").rglob(".*tmp-*")]
    assert leftovers == []


def test_not_a_solution(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_solution_version(tmp_path / "missing")
    (tmp_path / "x").mkdir()
    with pytest.raises(InputError, match="not a solution"):
        load_solution_version(tmp_path / "x")
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "solution.json").write_text(json.dumps({"versions": []}))
    with pytest.raises(InputError, match="no solution version yet"):
        load_solution_version(tmp_path / "y")
