import numpy as np
import pandas as pd
import pytest

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.errors import InputError
from personalize_pipeline.features import FeaturizeOptions, featurize, load_features, save_features, training_set


def write_group(path, interactions: pd.DataFrame, items: pd.DataFrame | None = None):
    path.mkdir(parents=True, exist_ok=True)
    interactions.to_csv(path / "interactions.csv", index=False)
    if items is not None:
        items.to_csv(path / "items.csv", index=False)
    return read_dataset_group(path)


def test_ids_stay_exact_strings_and_columns_go_by_name():
    group = read_dataset_group("tests/data/airline-slice")
    features = featurize(group)
    raw = pd.read_csv("tests/data/airline-slice/interactions.csv", dtype=str)
    assert set(features.item_ids) >= set(raw["ITEM_ID"])
    assert "-2996180203100007228" in set(features.item_ids)
    assert set(features.user_ids) >= set(raw["USER_ID"])
    # contextual metadata encoded, vocabulary kept
    assert "ctx_CABIN_TYPE" in features.interactions
    assert set(features.info["vocabularies"]["interactions.CABIN_TYPE"]) == set(raw["CABIN_TYPE"].unique())
    # numeric item metadata standardised, categorical as code lists
    assert "num_DynamicPrice" in features.items and "cat_Airline" in features.items
    assert features.items["num_DynamicPrice"].abs().max() < 10


def test_sorted_by_user_then_time_with_stable_ties(tmp_path):
    inter = pd.DataFrame(
        {
            "USER_ID": ["b", "a", "a", "a", "b"],
            "ITEM_ID": ["x", "z", "y", "w", "v"],
            "TIMESTAMP": [5, 9, 3, 3, 1],
        }
    )
    f = featurize(write_group(tmp_path, inter))
    indptr, items = f.sequences()
    a, b = f.user_index(np.array(["a", "b"]))
    assert list(f.item_ids[items[indptr[a] : indptr[a + 1]]]) == ["y", "w", "z"]  # ties keep file order
    assert list(f.item_ids[items[indptr[b] : indptr[b + 1]]]) == ["v", "x"]


def test_event_type_and_value_filters(tmp_path):
    inter = pd.DataFrame(
        {
            "USER_ID": ["u1", "u1", "u2", "u2"],
            "ITEM_ID": ["i1", "i2", "i3", "i4"],
            "TIMESTAMP": [1, 2, 3, 4],
            "EVENT_TYPE": ["click", "buy", "buy", "buy"],
            "EVENT_VALUE": [1.0, 5.0, 0.5, 10.0],
        }
    )
    group = write_group(tmp_path, inter)
    f = featurize(group, FeaturizeOptions(event_type="buy", event_value_threshold=1.0))
    assert sorted(f.item_ids[f.interactions["item"]]) == ["i2", "i4"]
    assert f.n_items == 4  # the catalogue still knows every item
    with pytest.raises(InputError, match="no interactions with EVENT_TYPE 'view'"):
        featurize(group, FeaturizeOptions(event_type="view"))


def test_user_history_percentiles_shape_the_training_set_only(tmp_path):
    users = np.repeat([f"u{i}" for i in range(100)], np.arange(1, 101))
    inter = pd.DataFrame({"USER_ID": users, "ITEM_ID": "i1", "TIMESTAMP": np.arange(len(users))})
    f = featurize(
        write_group(tmp_path, inter),
        FeaturizeOptions(min_user_history_length_percentile=0.1, max_user_history_length_percentile=0.9),
    )
    assert f.n_interactions == len(users)  # every user's events stay, for inference and filters
    train, dropped = training_set(f, 0.1, 0.9)
    lengths = np.bincount(train.interactions["user"], minlength=f.n_users)
    kept = lengths[lengths > 0]
    assert kept.min() >= 10 and kept.max() <= 91
    assert dropped == 100 - len(kept)


def test_impressions_and_metadata_round_trip(tmp_path):
    inter = pd.DataFrame(
        {
            "USER_ID": ["u1", "u2"],
            "ITEM_ID": ["i1", "i2"],
            "TIMESTAMP": [1, 2],
            "IMPRESSION": ["i1|i9|i8", "i2"],
        }
    )
    items = pd.DataFrame({"ITEM_ID": ["i1", "i2", "i3"], "GENRE": ["a|b", "b", None], "CREATION_TIMESTAMP": [1, 2, 3]})
    f = featurize(write_group(tmp_path, inter, items))
    assert set(f.item_ids) == {"i1", "i2", "i3", "i8", "i9"}
    first = f.interactions.iloc[0]
    assert list(f.item_ids[np.asarray(first["impression"])]) == ["i1", "i9", "i8"]
    vocab = f.info["vocabularies"]["items.GENRE"]
    genres = f.items.set_index("ITEM_ID")["cat_GENRE"]
    assert [vocab[c - 1] for c in genres["i1"]] == ["a", "b"]
    save_features(f, tmp_path / "features")
    g = load_features(tmp_path / "features")
    assert list(g.item_ids) == list(f.item_ids)
    pd.testing.assert_frame_equal(
        g.interactions[["user", "item", "timestamp"]], f.interactions[["user", "item", "timestamp"]]
    )
    assert list(np.asarray(g.interactions.iloc[0]["impression"])) == list(np.asarray(first["impression"]))
    assert g.info == f.info


def test_without_impression_lists_the_catalogue_and_codes_stay(tmp_path):
    """Recipes that never read impressions (aws-popularity-count) featurize without the
    lists; items seen only in impressions still join the catalogue."""
    from personalize_pipeline.recipes.popularity_count import PopularityCount

    inter = pd.DataFrame(
        {
            "USER_ID": ["u1", "u1", "u2"],
            "ITEM_ID": ["i1", "i2", "i1"],
            "TIMESTAMP": [1, 2, 3],
            "IMPRESSION": ["i1|i9", "i2|i8|i1", None],
        }
    )
    group = write_group(tmp_path, inter)
    options = PopularityCount.featurize_options({})
    assert options.impressions is False
    full, lean = featurize(group), featurize(group, options)
    assert "impression" in full.interactions and "impression" not in lean.interactions
    assert not lean.info["has_impressions"] and full.info["has_impressions"]
    assert list(lean.item_ids) == list(full.item_ids) == ["i1", "i2", "i8", "i9"]
    pd.testing.assert_frame_equal(lean.interactions, full.interactions.drop(columns=["impression"]))
