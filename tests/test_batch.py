import json

import numpy as np
import pytest

from personalize_pipeline.batch import run_batch_job
from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.errors import InputError
from personalize_pipeline.features import featurize
from personalize_pipeline.recipes.scoring import BF16_SCORE_RTOL, bf16_available
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


def _lines_one_by_one(data: bytes) -> list[str]:
    """The input lines as a line-by-line reader sees them (the reference for _line_blocks)."""
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    pieces = data.split(b"\n")
    pieces = pieces[:-1] if data.endswith(b"\n") else pieces
    return [piece.decode("utf-8", errors="replace").rstrip("\r\n") for piece in pieces]


@pytest.mark.parametrize("read_bytes", [1, 5, 64, 1 << 20])
def test_input_read_in_blocks_gives_the_lines_of_a_line_reader(tmp_path, monkeypatch, read_bytes):
    import personalize_pipeline.batch as batch
    from personalize_pipeline.locations import as_location

    data = (
        b'\xef\xbb\xbf{"userId": "1"}\r\n\n{"userId": "caf\xc3\xa9"}\n  \n'
        + b'{"userId": "\xff\xfe"}\r\r\n{"userId": "\xe2\x82"}\n'
        + b"x" * 300
        + b'\n{"userId": "last"}'
    )
    job = tmp_path / "job.jsonl"
    job.write_bytes(data)
    monkeypatch.setattr(batch, "READ_BYTES", read_bytes)
    lines = [line for block in batch._line_blocks(as_location(job)) for line in block]
    assert lines == _lines_one_by_one(data)
    chunks = list(batch._chunked(iter([lines[:3], lines[3:]]), 2, first=1))
    assert [len(chunk) for chunk in chunks] == [1, 2, 2, 1]  # the blank lines are left out
    assert [lineno for chunk in chunks for lineno, _ in chunk] == [1, 3, 5, 6, 7, 8]


def test_small_reads_and_chunks_give_the_same_output_and_line_numbers(solution, tmp_path, monkeypatch):
    import personalize_pipeline.batch as batch

    version, features = solution
    job = tmp_path / "job.jsonl"
    users = [json.dumps({"userId": str(u)}) for u in features.user_ids[:7]]
    job.write_bytes(("\r\n".join([*users[:3], "", "not json", *users[3:]])).encode())
    whole = run_batch_job(version, job, tmp_path / "whole", num_results=5)
    monkeypatch.setattr(batch, "READ_BYTES", 16)
    monkeypatch.setattr(batch, "FIRST_CHUNK", 2)
    monkeypatch.setattr(batch, "CHUNK", 3)
    small = run_batch_job(version, job, tmp_path / "small", num_results=5)
    out = (tmp_path / "small" / "job.jsonl.out").read_bytes()
    assert out == (tmp_path / "whole" / "job.jsonl.out").read_bytes()
    assert (small.lines, small.errors) == (whole.lines, whole.errors) == (8, 1)
    rows = [json.loads(line) for line in out.splitlines()]
    assert "line 5" in rows[3]["error"] and [row["input"] for row in rows[:3]] == [json.loads(u) for u in users[:3]]


@pytest.fixture(scope="module")
def neural_solutions(demo_small, tmp_path_factory):
    """aws-hrnn and aws-user-personalization (which explores) on the small demo."""
    features = featurize(read_dataset_group(demo_small))
    out = tmp_path_factory.mktemp("neural")
    versions = {
        recipe: train(features, SolutionConfig(recipe, {"epochs": "1", "hidden_dimension": "32"}), out / recipe)
        for recipe in ("aws-hrnn", "aws-user-personalization")
    }
    return versions, features


def job_lines(tmp_path, lines: list[str]):
    job = tmp_path / "job.jsonl"
    job.write_text("\n".join(lines) + "\n")
    return job


@pytest.mark.parametrize("filtered", [False, True])
def test_plain_user_lines_are_served_byte_identical_to_the_general_path(
    neural_solutions, tmp_path, monkeypatch, filtered
):
    from personalize_pipeline.batch_handlers import UserRecommendationHandler

    versions, features = neural_solutions
    plain = [json.dumps({"userId": str(u)}) for u in features.user_ids[:40]] + [json.dumps({"userId": "nobody"})]
    job = job_lines(tmp_path, plain)
    kwargs = {"num_results": 7}
    if filtered:
        kwargs.update(filter_expression="INCLUDE ItemID WHERE Items.GENRE IN ($G)", filter_values={"G": '"Drama"'})
    calls = []
    serve_plain = UserRecommendationHandler.serve_plain

    def spy(self, texts):
        calls.append(serve_plain(self, texts))
        return calls[-1]

    monkeypatch.setattr(UserRecommendationHandler, "serve_plain", spy)
    fast = run_batch_job(versions["aws-hrnn"], job, tmp_path / "fast", **kwargs)
    assert calls and all(c is not None for c in calls)  # the short cut served the job
    monkeypatch.setattr(UserRecommendationHandler, "serve_plain", lambda self, texts: None)
    general = run_batch_job(versions["aws-hrnn"], job, tmp_path / "general", **kwargs)
    assert (tmp_path / "fast" / "job.jsonl.out").read_bytes() == (tmp_path / "general" / "job.jsonl.out").read_bytes()
    assert (fast.lines, fast.errors, fast.unknown_users) == (general.lines, general.errors, general.unknown_users)
    assert fast.unknown_users == 1


def test_lines_that_are_not_plain_take_the_general_path(neural_solutions, tmp_path):
    from personalize_pipeline.batch_handlers import PLAIN_USER_LINES

    versions, features = neural_solutions
    user = str(features.user_ids[0])
    for text in ('{"userId":"1"}', '{"userId": "a\\"b"}', '{"userId": "é"}', '{"userId": ""}', '{"userId": 1}'):
        assert not PLAIN_USER_LINES.fullmatch(text + "\n")
    assert PLAIN_USER_LINES.fullmatch(f'{{"userId": "{user}"}}\n{{"userId": "x y"}}\n')
    lines = [json.dumps({"userId": user}), '{"userId":"' + user + '"}', json.dumps({"userId": "é"}), "{bad"]
    result = run_batch_job(versions["aws-hrnn"], job_lines(tmp_path, lines), tmp_path / "out", num_results=5)
    rows = [json.loads(line) for line in (tmp_path / "out" / "job.jsonl.out").read_text().splitlines()]
    assert rows[0]["output"] == rows[1]["output"] and rows[2]["input"] == {"userId": "é"}
    assert result.errors == 1 and result.unknown_users == 1


@pytest.mark.skipif(not bf16_available(), reason="this CPU has no native bf16")
@pytest.mark.parametrize("recipe", ["aws-hrnn", "aws-user-personalization"])
def test_bf16_scoring_precision_keeps_items_and_scores_within_tolerance(neural_solutions, tmp_path, recipe):
    versions, features = neural_solutions
    lines = [json.dumps({"userId": str(u)}) for u in features.user_ids] + [json.dumps({"userId": "nobody"})]
    job = job_lines(tmp_path, lines)
    run_batch_job(versions[recipe], job, tmp_path / "f32", num_results=25)
    run_batch_job(versions[recipe], job, tmp_path / "bf16", num_results=25, scoring_precision="bf16")
    f32 = [json.loads(line) for line in (tmp_path / "f32" / "job.jsonl.out").read_text().splitlines()]
    bf16 = [json.loads(line) for line in (tmp_path / "bf16" / "job.jsonl.out").read_text().splitlines()]
    assert [r["output"]["recommendedItems"] for r in bf16] == [r["output"]["recommendedItems"] for r in f32]
    np.testing.assert_allclose(
        np.array([r["output"]["scores"] for r in bf16]),
        np.array([r["output"]["scores"] for r in f32]),
        rtol=BF16_SCORE_RTOL,
        atol=2e-7,  # the rendered scores' 7th decimal
    )


def test_scoring_precision_is_checked_before_output(solution, tmp_path):
    version, _ = solution
    with pytest.raises(InputError, match="scoring_precision"):
        run_batch_job(version, job_lines(tmp_path, ['{"userId": "x"}']), tmp_path / "out", scoring_precision="fp8")
    assert not (tmp_path / "out").exists()


def test_throughput_is_net_of_the_start_up_and_warm_up_builds_the_scorer(neural_solutions, tmp_path):
    from personalize_pipeline.batch import JobSettings, handler_for

    versions, features = neural_solutions
    job = job_lines(tmp_path, [json.dumps({"userId": str(u)}) for u in features.user_ids[:30]])
    result = run_batch_job(versions["aws-hrnn"], job, tmp_path / "out")
    assert 0 < result.startup_seconds < result.seconds
    assert result.users_per_second == round(result.users_scored / (result.seconds - result.startup_seconds), 1)
    recipe = versions["aws-hrnn"].recipe
    recipe._scorer = None  # as after loading the version
    handler_for(versions["aws-hrnn"], JobSettings(25, None, None, None, None, None, None)).warm_up()
    assert recipe._scorer is not None  # the item side is built before the first chunk
