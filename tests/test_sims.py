import io

import numpy as np
import pandas as pd
import pytest

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.errors import InputError
from personalize_pipeline.features import featurize
from personalize_pipeline.recipes.base import UserBatch
from personalize_pipeline.recipes.sims import SIMS, TOP_NEIGHBOURS

# no item-count percentile filtering unless a test asks for it
ALL_ITEMS = {"min_item_interaction_count_percentile": 0.0, "max_item_interaction_count_percentile": 1.0}

# Users per item set: A co-occurs with B (6 users), C (4) and D (2); B, C, D and E also
# have users of their own. Distinct users: A 12, B 36, C 9, D 3, E 40.
GROUPS = [("AB", 6), ("AC", 4), ("AD", 2), ("B", 30), ("C", 5), ("D", 1), ("E", 40)]
N = {"A": 12, "B": 36, "C": 9, "D": 3, "E": 40}
CO_A = {"B": 6, "C": 4, "D": 2}


def write_interactions(path, groups):
    rows, user = [], 0
    for items, count in groups:
        for _ in range(count):
            for t, item in enumerate(items):
                rows.append((f"u{user:04d}", item, 1_000 + 10 * user + t))
            user += 1
    pd.DataFrame(rows, columns=["USER_ID", "ITEM_ID", "TIMESTAMP"]).to_csv(path / "interactions.csv", index=False)
    return featurize(read_dataset_group(path))


@pytest.fixture
def features(tmp_path):
    return write_interactions(tmp_path, GROUPS)


def code(features, *ids):
    return features.item_index(np.array(ids, dtype=object))


def names(features, codes):
    return [features.item_ids[c] if c >= 0 else None for c in codes]


@pytest.mark.parametrize(
    "d, expected",
    [
        (0.0, ["B", "C", "D"]),  # raw counts 6, 4, 2
        (0.5, ["C", "D", "B"]),  # cosine 4/sqrt(12*9)=.385, 2/sqrt(12*3)=.333, 6/sqrt(12*36)=.289
        (1.0, ["D", "C", "B"]),  # lift/U 2/36=.056, 4/108=.037, 6/432=.014
    ],
)
def test_cooccurring_items_first_in_hand_computed_order(features, d, expected):
    model = SIMS(popularity_discount_factor=d, min_cointeraction_count=2, **ALL_ITEMS).fit(features)
    items, scores = model.related(code(features, "A"), 4)
    assert names(features, items[0]) == expected + ["E"]  # then the most popular other item
    want = [CO_A[j] / (N["A"] * N[j]) ** d for j in expected]
    np.testing.assert_allclose(scores[0, :3], want, rtol=1e-6)
    assert scores[0, 3] == 0.0 and np.all(scores[0, :3] > 0)
    # symmetric: A is B's, C's and D's only neighbour
    items, scores = model.related(code(features, "B", "C", "D"), 1)
    assert names(features, items[:, 0]) == ["A", "A", "A"]
    np.testing.assert_allclose(scores[:, 0], [CO_A[j] / (N["A"] * N[j]) ** d for j in "BCD"], rtol=1e-6)


def test_min_cointeraction_count_removes_weak_pairs_and_popular_items_fill(features):
    model = SIMS(min_cointeraction_count=5, **ALL_ITEMS).fit(features)
    items, scores = model.related(code(features, "A"), 4)
    # only A-B co-occurs 5+ times; then popular items (E 40, C 9, D 3), never A
    assert names(features, items[0]) == ["B", "E", "C", "D"]
    assert scores[0, 0] > 0 and np.all(scores[0, 1:] == 0)
    assert model.training_stats()["cointeraction_pairs"] == 2  # (A, B) and (B, A)
    # with the default (3), A-D (2 users) is not similar either; cosine puts C before B
    items, scores = SIMS(**ALL_ITEMS).fit(features).related(code(features, "A"), 4)
    assert names(features, items[0]) == ["C", "B", "E", "D"]
    assert np.all(scores[0, :2] > 0) and np.all(scores[0, 2:] == 0)


def test_query_item_never_returns_and_unknown_items_get_popular(features):
    model = SIMS(min_cointeraction_count=0, **ALL_ITEMS).fit(features)
    queries = np.arange(features.n_items)
    items, scores = model.related(queries, features.n_items)
    assert items.shape == (5, 5)
    for q, row in zip(queries, items, strict=True):
        assert q not in row
        assert sorted(row[:4]) == sorted(set(range(5)) - {q})  # everything else once
        assert row[4] == -1  # the catalogue has no 6th item
    assert np.all(np.isneginf(scores[:, 4]))
    assert np.all(np.diff(scores[:, :4], axis=1) <= 0)
    items, scores = model.related(np.array([-1, -1]), 3)
    assert [names(features, r) for r in items] == [["E", "B", "A"]] * 2  # distinct users, desc
    assert np.all(scores == 0)


def test_allowed_mask_applies_before_the_list_is_cut(features):
    model = SIMS(min_cointeraction_count=2, **ALL_ITEMS).fit(features)
    a, b, c = code(features, "A", "B", "C")
    allowed = np.ones((2, features.n_items), dtype=bool)
    allowed[0, c] = False  # row 0: no C
    allowed[1, :] = False
    allowed[1, b] = True  # row 1: only B
    items, scores = model.related(np.array([a, -1]), 4, allowed=allowed)
    assert names(features, items[0]) == ["D", "B", "E", None]  # C gone, the rest move up
    assert names(features, items[1]) == ["B", None, None, None]
    assert np.all(scores[0, :2] > 0) and scores[0, 2] == 0 and np.isneginf(scores[0, 3])
    batch = UserBatch(np.array([0, 1]), np.array([0, 1, 2]), np.array([a, a]))
    items, _ = model.recommend(batch, 4, allowed=allowed)
    assert names(features, items[0]) == ["D", "B", "E", "A"]
    assert names(features, items[1]) == ["B", None, None, None]


def test_item_count_percentiles_exclude_the_most_popular_items(features):
    # events: D 3, C 9, A 12, B 36, E 40; the 0.5 quantile is 12 -> B and E are out
    model = SIMS(
        min_cointeraction_count=2, min_item_interaction_count_percentile=0.0, max_item_interaction_count_percentile=0.5
    ).fit(features)
    assert model.training_stats()["eligible_items"] == 3
    items, scores = model.related(code(features, "A", "B"), 4)
    assert names(features, items[0]) == ["C", "D", "E", "B"]  # B is no longer similar: popular fill
    assert np.all(scores[0, :2] > 0) and np.all(scores[0, 2:] == 0)
    assert names(features, items[1]) == ["E", "A", "C", "D"]  # B has no neighbours: popular items
    assert np.all(scores[1] == 0)
    # min percentile: D (3 events, below the 0.2 quantile 7.8) is out; so it is with the
    # default 0.01 (quantile 3.24) on this tiny catalogue
    model = SIMS(
        min_cointeraction_count=2, min_item_interaction_count_percentile=0.2, max_item_interaction_count_percentile=1.0
    ).fit(features)
    items, _ = model.related(code(features, "A"), 3)
    assert names(features, items[0]) == ["C", "B", "E"]


def test_recommend_scores_users_by_recent_history(features):
    model = SIMS(min_cointeraction_count=2, **ALL_ITEMS).fit(features)
    a, c = code(features, "A", "C")
    batch = UserBatch(np.array([0, 1, -1]), np.array([0, 1, 3, 3]), np.array([a, c, c]))
    scores = model.score(batch)
    assert scores.shape == (3, features.n_items) and scores.dtype == np.float32
    assert scores[1, a] == pytest.approx(4 / np.sqrt(12 * 9))  # a repeated item counts once
    items, values = model.recommend(batch, 4)
    assert names(features, items[0]) == ["C", "D", "B", "E"]  # A's neighbours, then popular
    assert names(features, items[1]) == ["A", "E", "B", "C"]  # C's neighbour A, then popular (seen C too)
    assert names(features, items[2]) == ["E", "B", "A", "C"]  # no history: popular
    assert np.all(values[2] == 0)
    items, _ = model.recommend(batch, 5, exclude_seen=True)
    assert names(features, items[0]) == ["C", "D", "B", "E", None]
    # the window is the last 10 events: an old item no longer counts
    hist = np.array([a] + [c] * 10)
    old = UserBatch(np.array([0]), np.array([0, 11]), hist)
    assert model.score(old)[0, code(features, "B")[0]] == 0
    assert model.score(old)[0, a] > 0


def test_state_round_trip_and_determinism(demo_small):
    features = featurize(read_dataset_group(demo_small))
    model = SIMS().fit(features)
    again = SIMS().fit(features)
    for key, value in model.state().items():
        np.testing.assert_array_equal(again.state()[key], value)
    buf = io.BytesIO()
    np.savez(buf, **model.state())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        state = {k: npz[k] for k in npz.files}
    clone = SIMS.from_state(model.params, state)
    queries = np.concatenate([[-1], np.arange(features.n_items)])
    for a, b in zip(model.related(queries, 25), clone.related(queries, 25), strict=True):
        np.testing.assert_array_equal(a, b)
    # the masked path (filters) agrees with the fast one when everything is allowed
    everything = np.ones((len(queries), features.n_items), dtype=bool)
    for a, b in zip(model.related(queries, 25), model.related(queries, 25, allowed=everything), strict=True):
        np.testing.assert_array_equal(a, b)
    indptr, items = features.sequences()
    batch = UserBatch.from_histories(np.arange(50), indptr, items)
    for a, b in zip(
        model.recommend(batch, 25, exclude_seen=True), clone.recommend(batch, 25, exclude_seen=True), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_demo_items_of_a_genre_cooccur(demo_small):
    params = SIMS.resolve_hyperparameters({})
    features = featurize(read_dataset_group(demo_small), SIMS.featurize_options(params))
    model = SIMS(**params).fit(features)
    stats = model.training_stats()
    assert 0 < stats["eligible_items"] < stats["items_with_interactions"]
    genre = pd.read_csv(demo_small / "items.csv", dtype=str).set_index("ITEM_ID")["GENRE"].str.split("|").str[0]
    item_genre = genre.reindex(features.item_ids).to_numpy()
    # the default 0.9 percentile keeps the 10 % most interacted-with items out of similarity
    too_popular = ~model.eligible & (model.events > 0)
    assert too_popular.any()
    assert not np.isin(np.flatnonzero(too_popular), model.indices).any()
    assert np.all(np.diff(model.indptr)[too_popular] == 0)
    # the 20 most popular items that have neighbours: their top 5 share the query's genre
    has_neighbours = np.diff(model.indptr) >= 5
    queries = np.flatnonzero(has_neighbours)[np.argsort(-model.events[has_neighbours], kind="stable")[:20]]
    assert len(queries) == 20
    related, scores = model.related(queries, 5)
    assert np.all(scores > 0) and not np.any(related == queries[:, None])
    same = (item_genre[related] == item_genre[queries][:, None]).mean()
    values, counts = np.unique(item_genre, return_counts=True)
    chance = ((counts * (counts - 1)).sum()) / (len(item_genre) * (len(item_genre) - 1))
    assert same > 0.6 and same > 3 * chance, (same, chance)
    assert model.sim.shape == (features.n_items, features.n_items)
    assert np.diff(model.indptr).max() <= TOP_NEIGHBOURS


def test_hyperparameters_declared_and_validated():
    hps = {hp.name: hp for hp in SIMS.hyperparameters}
    assert SIMS.name == "aws-sims" and SIMS.recipe_type == "RELATED_ITEMS"
    assert SIMS.resolve_hyperparameters({}) == {
        "popularity_discount_factor": 0.5,
        "min_cointeraction_count": 3,
        "min_item_interaction_count_percentile": 0.01,
        "max_item_interaction_count_percentile": 0.9,
        "min_user_history_length_percentile": 0.005,
        "max_user_history_length_percentile": 0.995,
    }
    assert hps["popularity_discount_factor"].tunable and hps["min_cointeraction_count"].tunable
    assert all(hps[n].featurization for n in hps if "percentile" in n)
    options = SIMS.featurize_options(SIMS.resolve_hyperparameters({}))
    assert (options.min_user_history_length_percentile, options.max_user_history_length_percentile) == (0.005, 0.995)
    with pytest.raises(InputError, match="min_cointeraction_count"):
        SIMS(min_cointeraction_count=11)
    with pytest.raises(InputError, match="popularity_discount_factor"):
        SIMS(popularity_discount_factor="1.5")
    with pytest.raises(InputError, match="max_item_interaction_count_percentile"):
        SIMS(max_item_interaction_count_percentile="lots")
    with pytest.raises(InputError, match="no hyperparameter"):
        SIMS(similarity="cosine")
    assert SIMS(min_cointeraction_count="7").params["min_cointeraction_count"] == 7
    with pytest.raises(RuntimeError, match="fit"):
        SIMS().related(np.array([0]), 3)
