import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from cli_helpers import call

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.features import featurize
from personalize_pipeline.recipes import ItemAffinity, get_recipe
from personalize_pipeline.recipes.activity import choose_half_life
from personalize_pipeline.recipes.item_affinity import history_matrix

ITEMS = (
    [(f"h{i}", "Horror", 12.0) for i in range(1, 6)]
    + [(f"c{i}", "Comedy", 5.0) for i in range(1, 4)]
    + [(f"x{i}", "Comedy|Romance", 20.0) for i in range(1, 4)]
)
HORROR, CHEAP, PRICEY = [i for i, *_ in ITEMS[:5]], [i for i, *_ in ITEMS[5:8]], [i for i, *_ in ITEMS[8:]]
GROUPS = {"h": HORROR, "c": CHEAP, "x": PRICEY}  # user prefix -> the items its users interact with


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for prefix, items in GROUPS.items():
        for u in range(20):
            # each user sees 2-3 of the group's items: item affinity has to generalise
            chosen = rng.choice(items, size=rng.integers(2, 4), replace=False)
            rows += [(f"{prefix}{u:02d}", item, 1_000_000 + 1000 * u + t) for t, item in enumerate(chosen)]
    pd.DataFrame(rows, columns=["USER_ID", "ITEM_ID", "TIMESTAMP"]).to_csv(tmp_path / "interactions.csv", index=False)
    pd.DataFrame(ITEMS, columns=["ITEM_ID", "GENRES", "PRICE"]).to_csv(tmp_path / "items.csv", index=False)
    return tmp_path


def train(dataset, tmp_path, capsys, recipe):
    solution = tmp_path / recipe
    rc, _, err = call(capsys, "train", "--dataset", dataset, "--recipe", recipe, "--no-validate", "--out", solution)
    assert rc == 0, err
    return solution


def segment_job(capsys, tmp_path, solution, lines, *extra):
    job = tmp_path / "segments.jsonl"
    job.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    rc, stdout, err = call(capsys, "batch-infer", "--solution", solution, "--input", job, "--output", out, *extra)
    if rc != 0:
        return rc, err
    return rc, [json.loads(line) for line in (out / "segments.jsonl.out").read_text().splitlines()]


def test_item_affinity_finds_the_items_audience(dataset, tmp_path, capsys):
    solution = train(dataset, tmp_path, capsys, "aws-item-affinity")
    rc, out = segment_job(
        capsys,
        tmp_path,
        solution,
        ['{"itemId": "h1"}', '{"itemId": "x2"}', '{"itemId": "nope"}', "not json", '{"userId": "h00"}'],
        "--num-results",
        "20",
    )
    assert rc == 0, out
    h1, x2, unknown, bad, wrong_key = out
    assert h1["input"] == {"itemId": "h1"} and h1["error"] is None
    assert len(h1["output"]["usersList"]) == 20 and all(u.startswith("h") for u in h1["output"]["usersList"])
    assert all(u.startswith("x") for u in x2["output"]["usersList"])
    assert unknown["output"] is None and "unknown itemId 'nope'" in unknown["error"]
    assert bad["output"] is None and "line 4: invalid JSON" in bad["error"]
    assert 'missing key "itemId"' in wrong_key["error"]
    # every user once; 60 users in all: the segment stops there
    rc, out = segment_job(capsys, tmp_path, solution, ['{"itemId": "h1"}'], "--num-results", "1000")
    users = out[0]["output"]["usersList"]
    assert len(users) == 60 == len(set(users)) and all(u.startswith("h") for u in users[:20])


def test_item_attribute_affinity_uses_personalize_syntax(dataset, tmp_path, capsys):
    solution = train(dataset, tmp_path, capsys, "aws-item-attribute-affinity")
    lines = [
        json.dumps({"itemAttributes": 'ITEMS.GENRES = "Comedy" AND ITEMS.PRICE > 10'}),
        json.dumps({"itemAttributes": 'ITEMS.GENRES = "Comedy"'}),
        json.dumps({"itemAttributes": 'ITEMS.GENRES IN ("Horror") OR ITEMS.PRICE < 6'}),
        json.dumps({"itemAttributes": 'ITEMS.GENRES = "Comedy" AND USERS.AGE > 3'}),
        json.dumps({"itemAttributes": 'ITEMS.GENRES = "Western"'}),
        json.dumps({"itemAttributes": "ITEMS.GENRES = "}),
        json.dumps({"itemId": "h1"}),
    ]
    rc, out = segment_job(capsys, tmp_path, solution, lines, "--num-results", "20")
    assert rc == 0, out
    assert all(u.startswith("x") for u in out[0]["output"]["usersList"])
    assert all(u[0] in "cx" for u in out[1]["output"]["usersList"])
    either = out[2]["output"]["usersList"]
    assert all(u[0] in "hc" for u in either)
    assert "only use Items fields" in out[3]["error"] and "no item matches" in out[4]["error"]
    assert out[5]["output"] is None and out[5]["error"].startswith("line 6: itemAttributes: position 16")
    assert 'missing key "itemAttributes"' in out[6]["error"] and "other segmentation recipe" in out[6]["error"]


def test_segment_job_limits(dataset, tmp_path, capsys):
    solution = train(dataset, tmp_path, capsys, "aws-item-affinity")
    rc, err = segment_job(capsys, tmp_path, solution, ['{"itemId": "h1"}'], "--num-results", "5000001")
    assert rc == 2 and "5,000,000" in err and not (tmp_path / "out").exists()
    rc, err = segment_job(
        capsys, tmp_path, solution, ['{"itemId": "h1"}'], "--filter", 'EXCLUDE ItemID WHERE Items.GENRES IN ("Horror")'
    )
    assert rc == 2 and "filters are not supported in batch segment jobs" in err
    assert get_recipe("arn:aws:personalize:::recipe/aws-item-affinity").recipe_type == "USER_SEGMENTATION"


def test_affinity_scores_and_history_weights(dataset):
    features = featurize(read_dataset_group(dataset))
    model = ItemAffinity().fit(features)
    h = history_matrix(np.array([0, 0, 0, 0]), np.array([1, 2, 1, 3]), 1, 4, 50).toarray()[0]
    assert h[3] == 1.0 and h[1] == pytest.approx(1 / 1.1) and h[2] == pytest.approx(1 / 1.2) and h[0] == 0
    batch_codes = features.user_index(np.array(["h00", "x00"], dtype=object))
    from personalize_pipeline.recipes import UserBatch

    indptr, items = features.sequences()
    scores = model.score(UserBatch.from_histories(batch_codes, indptr, items))
    code = {i: c for c, i in enumerate(features.item_ids)}
    assert scores[0, [code[i] for i in HORROR]].min() > scores[0, [code[i] for i in PRICEY]].max()


def test_default_inputs_of_scheduled_segment_jobs(dataset, tmp_path, capsys):
    from personalize_pipeline.job_inputs import write_default_input
    from personalize_pipeline.store import load_solution_version

    for recipe, expected in (
        ("aws-item-affinity", [{"itemId": i} for i in sorted(i for i, *_ in ITEMS)]),
        (
            "aws-item-attribute-affinity",
            [{"itemAttributes": f'ITEMS.GENRES = "{g}"'} for g in ("Comedy", "Horror", "Romance")],
        ),
    ):
        solution = train(dataset, tmp_path, capsys, recipe)
        job = write_default_input(load_solution_version(solution), tmp_path / recipe)
        assert [json.loads(line) for line in job.read_text().splitlines()] == expected
        rc, out = segment_job(capsys, tmp_path, solution, job.read_text().splitlines(), "--num-results", "3")
        assert rc == 0 and all(line["error"] is None and len(line["output"]["usersList"]) == 3 for line in out)


DAY = 86_400


def churn_features(tmp_path, old_events=30):
    """Horror fans: "old" rated h1/h2 ``old_events`` times in the first month and left; "new"
    rated them once each in the last days. Background users come for a burst and leave, one
    after the other over 400 days, so recent activity tells who is still around."""
    rows = [("old", ("h1", "h2")[e % 2], DAY * (e % 30)) for e in range(old_events)]
    rows += [("new", "h1", DAY * 398), ("new", "h2", DAY * 399)]
    for u in range(80):
        start = DAY * 5 * u
        rows += [(f"b{u:02d}", f"c{1 + e % 3}", start + DAY * e) for e in range(6)]
    pd.DataFrame(rows, columns=["USER_ID", "ITEM_ID", "TIMESTAMP"]).to_csv(tmp_path / "interactions.csv", index=False)
    pd.DataFrame(ITEMS, columns=["ITEM_ID", "GENRES", "PRICE"]).to_csv(tmp_path / "items.csv", index=False)
    return featurize(read_dataset_group(tmp_path))


def segment_of(model, features, item, k):
    code = int(np.flatnonzero(features.item_ids == item)[0])
    query = sp.csr_matrix(([1.0], ([code], [0])), shape=(features.n_items, 1))
    users, _ = model.segments(query, k)
    return [str(features.user_ids[u]) for u in users[0]]


def test_recently_active_user_ranks_above_one_who_left(tmp_path):
    features = churn_features(tmp_path)
    for hyperparameters in ({}, {"activity_half_life_days": 30.0}):
        model = ItemAffinity(**hyperparameters).fit(features)
        # same items, same shares: the user active lately is the likelier one to come back
        assert segment_of(model, features, "h1", 2) == ["new", "old"]
    # lifetime counts (a century-long half-life) put the 30 old events first
    assert segment_of(ItemAffinity(activity_half_life_days=36500.0).fit(features), features, "h1", 2) == ["old", "new"]
    # users without affinity follow by recent activity (lifetime counts: 6 events each, a tie)
    assert segment_of(ItemAffinity().fit(features), features, "h1", 5)[2:] == ["b79", "b78", "b77"]


def test_half_life_follows_the_data(tmp_path):
    # users who come and go: a short half-life; users active all along: long or lifetime counts
    features = churn_features(tmp_path)
    users = features.interactions["user"].to_numpy()
    times = features.interactions["timestamp"].to_numpy()
    churn = choose_half_life(users, times, features.n_users)
    assert churn < 400 * DAY / 8
    rng = np.random.default_rng(0)
    rates = rng.lognormal(0.0, 1.0, 2000)
    counts = rng.poisson(rates * 20) + 1
    steady_users = np.repeat(np.arange(2000), counts)
    steady_times = np.sort(rng.uniform(0, 400 * DAY, len(steady_users)))
    order = np.lexsort((steady_times, steady_users))
    steady = choose_half_life(steady_users[order], rng.permutation(steady_times)[order], 2000)
    assert steady >= 400 * DAY / 4
    assert ItemAffinity().fit(features).training_stats()["activity_half_life_days"] == round(churn / DAY, 3)
    # degenerate histories: one timestamp, or nothing before the window
    assert choose_half_life(np.array([0, 1, 1]), np.array([5, 5, 5]), 2) == float("inf")


def test_versions_saved_with_lifetime_counts_still_load(tmp_path):
    features = churn_features(tmp_path)
    model = ItemAffinity().fit(features)
    state = model.state()
    del state["log_activity"]
    state["activity"] = np.bincount(features.interactions["user"].to_numpy(), minlength=features.n_users)
    old = ItemAffinity()
    old._set_state(state)
    old.fitted = True
    assert segment_of(old, features, "h1", 2) == ["old", "new"]
