import json

import numpy as np
import pytest

from personalize_pipeline.batch import run_batch_job
from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.errors import InputError
from personalize_pipeline.features import featurize
from personalize_pipeline.training import SolutionConfig, train


@pytest.fixture(scope="module")
def solution(demo_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("solution")
    features = featurize(read_dataset_group(demo_small))
    return train(features, SolutionConfig(), out), features


def test_personalize_output_format(tmp_path, solution):
    version, features = solution
    job = tmp_path / "job.jsonl"
    lines = [
        {"userId": features.user_ids[0]},
        {"userId": "never-seen"},
        "{broken",
        {"itemList": ["a"], "userId": features.user_ids[1]},
        {"foo": 1},
        {"userId": features.user_ids[2]},
    ]
    job.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines) + "\n")
    result = run_batch_job(version, job, tmp_path / "out", num_results=10)
    out = (tmp_path / "out" / "job.jsonl.out").read_text().splitlines()
    assert len(out) == 6 and result.lines == 6 and result.errors == 3
    rows = [json.loads(line) for line in out]
    for row in rows:
        assert set(row) == {"input", "output", "error"}
    good = [rows[0], rows[1], rows[5]]
    for row in good:
        assert row["error"] is None
        assert len(row["output"]["recommendedItems"]) == 10
        assert len(row["output"]["scores"]) == 10
        assert row["output"]["scores"] == sorted(row["output"]["scores"], reverse=True)
        assert set(row["output"]["recommendedItems"]) <= set(features.item_ids)
    assert rows[0]["input"] == {"userId": features.user_ids[0]}
    # unknown users get the popular items
    assert rows[1]["output"]["recommendedItems"] == list(features.item_ids[version.recipe.order[:10]])
    assert rows[2]["output"] is None and "line 3: invalid JSON" in rows[2]["error"]
    assert "itemList" in rows[3]["error"]
    assert 'missing key "userId"' in rows[4]["error"]
    assert result.unknown_users == 1


def test_limits_and_missing_input(tmp_path, solution):
    version, _ = solution
    job = tmp_path / "job.jsonl"
    job.write_text('{"userId": "x"}\n')
    for bad in (0, 501):
        with pytest.raises(InputError, match="numResults"):
            run_batch_job(version, job, tmp_path / "out", num_results=bad)
    with pytest.raises(InputError, match="does not exist"):
        run_batch_job(version, tmp_path / "nope.jsonl", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_output_is_replaced_atomically(tmp_path, solution):
    version, _ = solution
    job = tmp_path / "job.jsonl"
    job.write_text('{"userId": "x"}\n')
    run_batch_job(version, job, tmp_path / "out", num_results=3)
    first = (tmp_path / "out" / "job.jsonl.out").read_bytes()
    run_batch_job(version, job, tmp_path / "out", num_results=3)
    assert (tmp_path / "out" / "job.jsonl.out").read_bytes() == first
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["job.jsonl.out"]


def test_related_items_job(demo_small, tmp_path):
    features = featurize(read_dataset_group(demo_small))
    version = train(features, SolutionConfig("aws-sims"), tmp_path / "sims")
    job = tmp_path / "items.jsonl"
    item = str(features.item_ids[3])
    job.write_text(
        json.dumps({"itemId": item})
        + "\n"
        + json.dumps({"itemId": "unknown-item"})
        + "\n"
        + json.dumps({"userId": "u1"})
        + "\n"
    )
    result = run_batch_job(version, job, tmp_path / "out", num_results=8)
    rows = [json.loads(line) for line in (tmp_path / "out" / "items.jsonl.out").read_text().splitlines()]
    assert result.errors == 1 and "itemId" in rows[2]["error"]
    assert len(rows[0]["output"]["recommendedItems"]) == 8 and item not in rows[0]["output"]["recommendedItems"]
    popular = list(features.item_ids[version.recipe.related(np.array([-1]), 8)[0][0]])
    assert rows[1]["output"]["recommendedItems"] == popular


@pytest.mark.slow
def test_filters_apply_inside_top_k(demo_small, tmp_path):
    features = featurize(read_dataset_group(demo_small))
    version = train(features, SolutionConfig("aws-hrnn", {"epochs": "2"}), tmp_path / "sol")
    genres = version.items_metadata.set_index("ITEM_ID")["GENRE"]
    users = list(features.user_ids[:5])
    job = tmp_path / "job.jsonl"
    lines = [{"userId": u} for u in users] + [
        {"userId": users[0], "filterValues": {"GENRES": '"Comedy"'}},
        {"userId": users[1], "filterValues": {}},
    ]
    job.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = run_batch_job(
        version,
        job,
        tmp_path / "out",
        num_results=10,
        filter_expression=(
            'INCLUDE ItemID WHERE Items.GENRE IN ($GENRES) | EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("*")'
        ),
        filter_values={"GENRES": '"Action","Drama"'},
    )
    rows = [json.loads(line) for line in (tmp_path / "out" / "job.jsonl.out").read_text().splitlines()]
    indptr, items = features.sequences()
    for row, user in zip(rows[:5], users, strict=True):
        recs = row["output"]["recommendedItems"]
        assert len(recs) == 10  # the filtered list is still full
        assert all({"Action", "Drama"} & set(str(genres[i]).split("|")) for i in recs)
        u = features.user_index(np.array([user]))[0]
        assert not set(recs) & set(features.item_ids[items[indptr[u] : indptr[u + 1]]])
    assert all("Comedy" in str(genres[i]).split("|") for i in rows[5]["output"]["recommendedItems"])
    assert rows[6]["output"] is None and "GENRES" in rows[6]["error"]  # a line's own values lack $GENRES
    assert result.errors == 1


def test_bad_filter_fails_before_output(demo_small, tmp_path):
    features = featurize(read_dataset_group(demo_small))
    version = train(features, SolutionConfig(), tmp_path / "sol")
    job = tmp_path / "job.jsonl"
    job.write_text('{"userId": "x"}\n')
    with pytest.raises(InputError, match="position"):
        run_batch_job(version, job, tmp_path / "out", filter_expression="INCLUDE ItemID WHERE Items.GENRE IN (")
    with pytest.raises(InputError, match="COLOUR"):
        run_batch_job(version, job, tmp_path / "out", filter_expression='INCLUDE ItemID WHERE Items.COLOUR IN ("red")')
    with pytest.raises(InputError, match="GENRES"):
        run_batch_job(version, job, tmp_path / "out", filter_expression="INCLUDE ItemID WHERE Items.GENRE IN ($GENRES)")
    assert not (tmp_path / "out").exists()


def test_streaming_in_chunks_gives_the_same_output(solution, tmp_path, monkeypatch):
    import personalize_pipeline.batch as batch

    version, features = solution
    job = tmp_path / "job.jsonl"
    lines = [json.dumps({"userId": str(u)}) for u in features.user_ids[:10]] + [
        "not json",
        json.dumps({"userId": "nobody"}),
    ]
    job.write_text("\n".join(lines) + "\n")
    whole = run_batch_job(version, job, tmp_path / "whole", num_results=5)
    monkeypatch.setattr(batch, "CHUNK", 3)
    chunked = run_batch_job(version, job, tmp_path / "chunked", num_results=5)
    assert (tmp_path / "whole" / "job.jsonl.out").read_bytes() == (tmp_path / "chunked" / "job.jsonl.out").read_bytes()
    assert (
        (whole.lines, whole.errors, whole.users_scored, whole.unknown_users)
        == (chunked.lines, chunked.errors, chunked.users_scored, chunked.unknown_users)
        == (12, 1, 11, 1)
    )
