import numpy as np
import pandas as pd
import pytest

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.demo_data import DemoSpec, generate
from personalize_pipeline.errors import InputError
from personalize_pipeline.features import featurize
from personalize_pipeline.recipes import HRNNColdstart, HRNNMetadata, UserBatch
from personalize_pipeline.recipes.hrnn_metadata import metadata_matrix
from personalize_pipeline.store import load_solution_version
from personalize_pipeline.training import SolutionConfig, train


@pytest.fixture(scope="module")
def catalog_heavy(tmp_path_factory):
    """Many items, few interactions each: plenty of cold items."""
    path = tmp_path_factory.mktemp("cold")
    generate(path, DemoSpec(users=300, items=800, interactions=6000, seed=11))
    return featurize(read_dataset_group(path))


def test_metadata_matrix_multi_hot_and_numeric():
    arr = pd.Series(
        [[1, 2], [2], None], dtype=pd.ArrowDtype(__import__("pyarrow").list_(__import__("pyarrow").int32()))
    )
    frame = pd.DataFrame(
        {"ITEM_ID": ["a", "b", "c"], "cat_G": arr, "num_P": np.array([0.5, -1.0, 0.0], dtype=np.float32)}
    )
    m = metadata_matrix(frame)
    assert m.shape == (3, 4)  # codes 0..2 (0 = missing) + one numeric
    np.testing.assert_allclose(m[0], [0, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(m[1], [0, 0, 1, -1.0])
    np.testing.assert_allclose(m[2], [0, 0, 0, 0])


@pytest.mark.slow
def test_metadata_recipe_uses_items_users_and_context(demo_small, tmp_path):
    features = featurize(read_dataset_group(demo_small))
    version = train(features, SolutionConfig("aws-hrnn-metadata", {"epochs": "3"}), tmp_path / "sol")
    stats = version.manifest["training"]
    assert stats["item_metadata_features"] > 0 and stats["user_metadata_features"] > 0 and stats["context_fields"] == 1
    loaded = load_solution_version(tmp_path / "sol")
    assert loaded.history_context is not None and loaded.history_context.shape == (len(loaded.history_items), 1)
    batch = loaded.user_batch(np.array([0, 5, -1]))
    a = version.recipe.recommend(batch, 10)
    b = loaded.recipe.recommend(batch, 10)
    np.testing.assert_array_equal(a[0], b[0])
    # context matters: the same history under another context scores differently
    other = UserBatch(batch.users, batch.history_indptr, batch.history_items, (batch.history_context % 3) + 1)
    assert not np.allclose(loaded.recipe.logits(batch)[:2], loaded.recipe.logits(other)[:2])


def test_metadata_recipe_needs_metadata(tmp_path):
    inter = pd.DataFrame({"USER_ID": np.repeat(["a", "b"], 3), "ITEM_ID": list("xyzxyz"), "TIMESTAMP": range(6)})
    inter.to_csv(tmp_path / "interactions.csv", index=False)
    with pytest.raises(InputError, match="needs metadata"):
        HRNNMetadata(epochs=1).fit(featurize(read_dataset_group(tmp_path)))


@pytest.mark.slow
def test_coldstart_recommends_cold_items_scored_from_metadata(catalog_heavy):
    params = {"epochs": 3, "cold_start_max_duration": 60.0}
    model = HRNNColdstart(**params).fit(catalog_heavy)
    assert 100 <= model.cold.sum() <= 80_000
    never_seen = model.cold & (model.fit_state.popularity == 0)
    assert never_seen.any()
    batch = UserBatch.from_histories(np.arange(30), *catalog_heavy.sequences())
    items, scores = model.recommend(batch, 10)
    assert model.cold[items].all()
    logits = model.logits(batch)
    unseen_scores = logits[:, never_seen]
    assert np.isfinite(unseen_scores).all() and unseen_scores.std() > 0  # metadata gives them distinct scores


def test_coldstart_enforces_personalize_cold_item_bounds(catalog_heavy):
    with pytest.raises(InputError, match="cold items .* between 100 and 80000"):
        HRNNColdstart(epochs=1, cold_start_max_interactions=0, cold_start_max_duration=0.0).fit(catalog_heavy)
