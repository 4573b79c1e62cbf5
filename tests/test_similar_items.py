import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from cli_helpers import call

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.features import featurize
from personalize_pipeline.recipes import SIMS, SimilarItems, get_recipe
from personalize_pipeline.recipes.similar_items import metadata_matrix

ITEMS_SCHEMA = {
    "type": "record",
    "name": "Items",
    "namespace": "com.amazonaws.personalize.schema",
    "version": "1.0",
    "fields": [
        {"name": "ITEM_ID", "type": "string"},
        {"name": "GENRE", "type": ["null", "string"], "categorical": True},
        {"name": "PRICE", "type": ["null", "float"]},
        {"name": "DESCRIPTION", "type": ["null", "string"], "textual": True},
    ],
}
# warm items: h* horror, c* comedy, p popular; "new" items have no interactions
ITEMS = [
    ("h1", "Horror", 9.0, "A haunted lighthouse keeper and his ghost"),
    ("h2", "Horror", 11.0, "The ghost of the haunted mill returns"),
    ("h3", "Horror|Thriller", 10.0, "Zombies in a shopping mall"),
    ("c1", "Comedy", 30.0, "Two friends open a bakery"),
    ("c2", "Comedy", 31.0, "A wedding goes hilariously wrong for friends"),
    ("c3", "Comedy|Romance", 29.0, "A bakery romance in Paris"),
    ("p", "Drama", 50.0, "A courtroom drama"),
    ("new_ghost", "Horror", 10.5, "A haunted house and a ghost"),
    ("new_bakery", "Comedy", 30.5, "Friends run a bakery"),
    ("new_bare", None, None, None),
]
# (items, number of users with exactly these items)
GROUPS = [
    ("h1 h2", 6),
    ("h2 h3", 5),
    ("h1 h3", 4),
    ("c1 c2", 6),
    ("c2 c3", 5),
    ("c1 c3", 4),
    ("p h1", 3),
    ("p c1", 3),
    ("p", 30),
]


@pytest.fixture
def dataset(tmp_path):
    rows, user = [], 0
    for items, count in GROUPS:
        for _ in range(count):
            rows += [(f"u{user:03d}", item, 1_000_000 + 100 * user + t) for t, item in enumerate(items.split())]
            user += 1
    pd.DataFrame(rows, columns=["USER_ID", "ITEM_ID", "TIMESTAMP"]).to_csv(tmp_path / "interactions.csv", index=False)
    pd.DataFrame(ITEMS, columns=["ITEM_ID", "GENRE", "PRICE", "DESCRIPTION"]).to_csv(
        tmp_path / "items.csv", index=False
    )
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "items.json").write_text(json.dumps(ITEMS_SCHEMA))
    return tmp_path


def related(model, features, item, k=5):
    items, scores = model.related(features.item_index(np.array([item], dtype=object)), k)
    return [features.item_ids[i] for i in items[0] if i >= 0], scores[0]


def test_new_items_get_neighbours_sharing_their_attributes(dataset):
    features = featurize(read_dataset_group(dataset))
    model = SimilarItems().fit(features)
    ghost, scores = related(model, features, "new_ghost", 3)
    assert set(ghost) == {"h1", "h2", "h3"} and np.all(scores > 0)
    assert ghost[:2] == ["h2", "h1"] or ghost[:2] == ["h1", "h2"]  # the haunted ghost stories before the zombies
    bakery, _ = related(model, features, "new_bakery", 3)
    assert set(bakery) == {"c1", "c2", "c3"}
    # aws-sims knows nothing about new items: popular items with score 0
    sims_list, sims_scores = related(
        SIMS(min_item_interaction_count_percentile=0, max_item_interaction_count_percentile=1).fit(features),
        features,
        "new_ghost",
        3,
    )
    assert sims_list[0] == "p" and np.all(sims_scores == 0)
    assert model.training_stats()["items_without_interactions_with_neighbours"] == 2  # new_bare has no attributes


def test_warm_items_rank_co_interactions_first_and_the_query_never_comes_back(dataset):
    features = featurize(read_dataset_group(dataset))
    model = SimilarItems().fit(features)
    for item in features.item_ids:
        listed, _ = related(model, features, item, len(features.item_ids))
        assert item not in listed and len(listed) == len(features.item_ids) - 1
    h1, _ = related(model, features, "h1", 3)
    assert set(h1[:2]) == {"h2", "h3"}  # co-interactions and genre together beat the popular item
    # a new item is offered as a neighbour of the warm items it resembles
    h2, h2_scores = related(model, features, "h2", 4)
    assert "new_ghost" in h2 and h2_scores[h2.index("new_ghost")] > 0
    # metadata_weight=0 is co-interactions only: new items get popular fill
    only_co = SimilarItems(metadata_weight=0.0).fit(features)
    assert related(only_co, features, "new_ghost", 1)[1][0] == 0.0


def test_metadata_matrix_fields_weigh_alike(dataset):
    features = featurize(read_dataset_group(dataset))
    m = metadata_matrix(features.items)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    bare = features.item_index(np.array(["new_bare"], dtype=object))[0]
    assert np.allclose(np.delete(norms, bare), 1.0, atol=1e-5) and norms[bare] == 0
    cos = (m @ m.T).toarray()
    code = {i: c for c, i in enumerate(features.item_ids)}
    # same genre, neighbouring price band and shared words beat same genre alone
    assert cos[code["new_ghost"], code["h1"]] > cos[code["new_ghost"], code["h3"]] > cos[code["new_ghost"], code["c1"]]
    assert sp.issparse(m)


def test_similar_items_batch_job(dataset, tmp_path, capsys):
    assert get_recipe("arn:aws:personalize:::recipe/aws-similar-items") is SimilarItems
    solution = tmp_path / "sol"
    rc, _, err = call(
        capsys, "train", "--dataset", dataset, "--recipe", "aws-similar-items", "--no-validate", "--out", solution
    )
    assert rc == 0, err
    job = tmp_path / "job.jsonl"
    job.write_text('{"itemId": "new_ghost"}\n{"itemId": "c1"}\n{"itemId": "unknown"}\n')
    rc, _, err = call(
        capsys,
        "batch-infer",
        "--solution",
        solution,
        "--input",
        job,
        "--output",
        tmp_path / "out",
        "--num-results",
        "3",
        "--filter",
        'EXCLUDE ItemID WHERE Items.GENRE IN ("Drama")',
    )
    assert rc == 0, err
    lines = [json.loads(line) for line in (tmp_path / "out" / "job.jsonl.out").read_text().splitlines()]
    assert set(lines[0]["output"]["recommendedItems"]) == {"h1", "h2", "h3"}
    assert "c1" not in lines[1]["output"]["recommendedItems"] and "new_bakery" in lines[1]["output"]["recommendedItems"]
    assert "p" not in lines[2]["output"]["recommendedItems"] and len(lines[2]["output"]["recommendedItems"]) == 3
