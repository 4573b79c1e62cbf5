"""Several solutions on one dataset group, from one personalize.yaml: each solution's weekly
schedule requests a run whose config is its batch_inference section, and the run writes
what that section asks for (numResults, filter, every *.jsonl of an input folder) under the
solution's own output folder; FULL and UPDATE of one solution share a run tag, two
solutions do not; the file sensor requests an UPDATE per trained solution."""

import datetime as dt
import json

import dagster as dg
import pandas as pd
import pytest
import torch
from pipeline_resources import key, pipeline_defs

from assets.jobs import SOLUTION_TAG

WATCHED = "EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ($TYPES)"
SUNDAY = dt.datetime(2026, 11, 22, 3, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def two_solutions(demo_small, tmp_path_factory, request):
    """Both solutions' weekly schedules evaluated and their run requests executed in process."""
    tmp = tmp_path_factory.mktemp("two-solutions")
    users = [
        json.loads(line)["userId"] for line in (demo_small / "batch-input" / "users.jsonl").read_text().splitlines()
    ]
    shards = tmp / "popular-input"
    shards.mkdir()
    for i, part in enumerate((users[:100], users[100:])):
        (shards / f"part-{i}.jsonl").write_text("".join(json.dumps({"userId": u}) + "\n" for u in part))
    solutions = [
        {
            "name": "popular",
            "recipe": "aws-popularity-count",
            "batch_inference": {
                "input": str(shards),
                "num_results": 5,
                "filter": WATCHED,
                "filter_values": {"TYPES": '"watch"'},
            },
        },
        {
            "name": "foryou",
            "recipe": "aws-hrnn",
            "hyperparameters": {"hidden_dimension": 32, "epochs": 1},
            "batch_inference": {"num_results": 7},
        },
    ]
    defs = pipeline_defs(demo_small, tmp / "artifacts", tmp / "output", solutions=solutions)
    instance = dg.DagsterInstance.ephemeral()
    runs = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models train fastest on one thread
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    for name in ("popular", "foryou"):
        schedule = defs.resolve_schedule_def(f"{name}__weekly_full_retrain")
        [run_request] = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=SUNDAY)).run_requests
        job = defs.resolve_job_def(f"{name}__full_retrain")
        assert dg.validate_run_config(job, run_request.run_config)
        runs[name] = (
            run_request,
            job.execute_in_process(run_config=run_request.run_config, instance=instance, raise_on_error=False),
        )
    return defs, instance, runs, tmp, users


def out_lines(path):
    return [json.loads(line) for line in open(path)]


def test_each_solution_writes_what_its_batch_inference_section_asks(two_solutions, demo_small):
    defs, instance, runs, tmp, users = two_solutions
    assert all(result.success for _, result in runs.values())
    popular_config = runs["popular"][0].run_config["ops"]["popular__batch_inference_output"]["config"]
    foryou_config = runs["foryou"][0].run_config["ops"]["foryou__batch_inference_output"]["config"]
    assert popular_config["num_results"] == 5 and popular_config["filter_expression"] == WATCHED
    assert (
        "exploration_weight" not in popular_config and "exploration_weight" not in foryou_config
    )  # they do not explore
    assert foryou_config["num_results"] == 7 and foryou_config["input"] == ""

    # popular: the input folder's two files, each its own .out, 5 items, no item the user watched
    md = runs["popular"][1].asset_materializations_for_node("popular__batch_inference_output")[-1].metadata
    outputs = md["outputs"].value
    assert [p.rsplit("/", 1)[1] for p in outputs] == ["part-0.jsonl.out", "part-1.jsonl.out"]
    assert all(p.startswith(str(tmp / "output" / "popular") + "/") for p in outputs)
    rows = [row for p in outputs for row in out_lines(p)]
    assert [r["input"]["userId"] for r in rows] == users and md["lines"].value == len(users)
    events = pd.read_csv(demo_small / "interactions.csv", dtype=str)
    watched = events[events["EVENT_TYPE"] == "watch"].groupby("USER_ID")["ITEM_ID"].agg(set).to_dict()
    for row in rows:
        items = row["output"]["recommendedItems"]
        assert len(items) == 5 and not set(items) & watched.get(row["input"]["userId"], set())
    top5 = events["ITEM_ID"].value_counts().index[:5]
    assert any(set(top5) & watched.get(u, set()) for u in users)  # the filter had something to remove

    # foryou: no input configured: every known user, 7 items each, under its own folder
    md = runs["foryou"][1].asset_materializations_for_node("foryou__batch_inference_output")[-1].metadata
    path = md["path"].value
    assert path.startswith(str(tmp / "output" / "foryou") + "/") and path.endswith("/all-users.jsonl.out")
    rows = out_lines(path)
    assert len(rows) == events["USER_ID"].nunique() and all(len(r["output"]["recommendedItems"]) == 7 for r in rows)
    latest = {n: json.loads((tmp / "output" / n / "latest.json").read_text()) for n in ("popular", "foryou")}
    assert latest["foryou"]["output"] == path and latest["popular"]["outputs"] == outputs


def test_solutions_have_their_own_assets_jobs_and_run_tags(two_solutions):
    defs, instance, runs, _, _ = two_solutions
    for name, (_, result) in runs.items():
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        other = "foryou" if name == "popular" else "popular"
        assert {
            f"{name}/featurized_dataset",
            f"{name}/solution_version",
            f"{name}/solution_metrics",
            "validated_interactions",
        } <= materialized
        assert not any(k.startswith(other) for k in materialized)
        assert instance.get_latest_materialization_event(key(name, "solution_version")).asset_materialization.metadata[
            "recipe"
        ].value == ("aws-popularity-count" if name == "popular" else "aws-hrnn")
    tags = {
        (n, mode): defs.resolve_job_def(f"{n}__{mode}").tags[SOLUTION_TAG]
        for n in ("popular", "foryou")
        for mode in ("full_retrain", "update")
    }
    assert tags[("popular", "full_retrain")] == tags[("popular", "update")] == "popular"
    assert tags[("foryou", "full_retrain")] == tags[("foryou", "update")] == "foryou"
    graph = defs.resolve_asset_graph()
    assert {graph.get(key(n, "solution_version")).group_name for n in ("popular", "foryou")} == {"popular", "foryou"}
    assert {s.name for s in defs.sensors} == {
        "new_dataset_files",
        "record_run_failures",
        "popular__batch_job_shards",
        "foryou__batch_job_shards",
    }


def test_file_sensor_requests_an_update_per_trained_solution(two_solutions):
    defs, instance, _, _, _ = two_solutions
    with dg.build_sensor_context(instance=instance, resources=defs.resources, definitions=defs) as context:
        result = defs.resolve_sensor_def("new_dataset_files").evaluate_tick(context)
    assert sorted(r.job_name for r in result.run_requests) == ["foryou__update", "popular__update"]
    for request in result.run_requests:
        name = request.job_name.split("__")[0]
        assert dg.validate_run_config(defs.resolve_job_def(request.job_name), request.run_config)
        ops = request.run_config["ops"]
        assert ops[f"{name}__solution_version"]["config"]["training_mode"] == "UPDATE"
        assert ops[f"{name}__batch_inference_output"]["config"]["num_results"] == (5 if name == "popular" else 7)


def test_a_run_without_validated_data_does_not_pick_up_another_runs(two_solutions):
    """Upstream reads are this run's: validated_* materialized by the FULL runs above are not
    read by a run that does not materialize them, unless its run config names them."""
    defs, instance, _, _, _ = two_solutions

    def materialize(names, run_config=None):
        return dg.materialize(
            [*defs.assets, *defs.asset_checks],
            resources=defs.resources,
            selection=dg.AssetSelection.assets(*[["popular", n] for n in names]),
            instance=instance,
            run_config=run_config,
            raise_on_error=False,
        )

    alone = materialize(["featurized_dataset"])
    assert not alone.success
    [failure] = [e for e in alone.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "validated_interactions was not materialized in this run" in failure.event_specific_data.error.message

    # naming the snapshots in the run config is the way to featurize without validating again
    latest = {
        t: instance.get_latest_materialization_event(dg.AssetKey(f"validated_{t}")).asset_materialization
        for t in ("interactions", "items", "users")
    }
    paths = {f"validated_{t}": m.metadata["path"].value for t, m in latest.items()}
    named = materialize(
        ["featurized_dataset"], {"ops": {"popular__featurized_dataset": {"config": {"upstream_paths": paths}}}}
    )
    assert named.success
    read = named.asset_materializations_for_node("popular__featurized_dataset")[-1].metadata["snapshots"].value
    assert read == {t.removeprefix("validated_"): p for t, p in paths.items()}

    # batch inference outside a training run: the solution store's latest complete version
    batch = materialize(
        ["batch_inference_output"], {"ops": {"popular__batch_inference_output": {"config": {"num_results": 3}}}}
    )
    assert batch.success
    trained = (
        instance.get_latest_materialization_event(key("popular", "solution_version"))
        .asset_materialization.metadata["solution_version"]
        .value
    )
    assert (
        batch.asset_materializations_for_node("popular__batch_inference_output")[-1].metadata["solution_version"].value
        == trained
    )
