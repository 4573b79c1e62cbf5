"""The shared data jobs of issue 18 and the recipes without a user input: a two-solution
code location (aws-item-affinity next to aws-trending-now) runs both FULL jobs with their
default batch inputs; metric_attribution reports per source and day; delete_users removes
the users' rows, lists and removes the versions that hold them, and never shows an id."""

import json
import shutil

import dagster as dg
import pandas as pd
import pytest
import torch
from pipeline_resources import pipeline_defs

SOLUTIONS = [
    {"name": "affinity", "recipe": "aws-item-affinity", "batch_inference": {"num_results": 5}},
    {"name": "trending", "recipe": "aws-trending-now", "batch_inference": {"num_results": 7}},
]


@pytest.fixture(scope="module")
def trained(demo_small, tmp_path_factory, request):
    """Both FULL jobs run on a copy of the demo dataset (delete_users changes it)."""
    tmp = tmp_path_factory.mktemp("data-jobs")
    dataset = tmp / "dataset"
    shutil.copytree(demo_small, dataset, ignore=shutil.ignore_patterns("batch-input"))
    defs = pipeline_defs(dataset, tmp / "artifacts", tmp / "output", solutions=SOLUTIONS)
    dg.Definitions.validate_loadable(defs)  # job, op and asset names do not clash
    instance = dg.DagsterInstance.ephemeral()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    results = {
        s["name"]: defs.resolve_job_def(f"{s['name']}__full_retrain").execute_in_process(
            instance=instance, raise_on_error=False
        )
        for s in SOLUTIONS
    }
    return defs, instance, results, tmp


def batch_output(result, name):
    md = result.asset_materializations_for_node(f"{name}__batch_inference_output")[-1].metadata
    return md, [json.loads(line) for line in open(str(md["path"].value))]


def test_item_affinity_full_job_writes_a_users_list_per_item(trained, demo_small):
    _, _, results, _ = trained
    assert results["affinity"].success
    md, rows = batch_output(results["affinity"], "affinity")
    items = pd.read_csv(demo_small / "items.csv", dtype=str)["ITEM_ID"]
    known = set(pd.read_csv(demo_small / "interactions.csv", dtype=str)["USER_ID"])
    assert md["path"].value.endswith("all-segments.jsonl.out") and md["lines"].value == len(rows)
    assert {r["input"]["itemId"] for r in rows} <= set(items) and len(rows) >= 0.9 * len(items)
    assert all(r["error"] is None and len(r["output"]["usersList"]) == 5 for r in rows)
    assert all(set(r["output"]["usersList"]) <= known and len(set(r["output"]["usersList"])) == 5 for r in rows)
    assert len({tuple(r["output"]["usersList"]) for r in rows}) > 1  # not one list for every item


def test_trending_now_full_job_recommends_for_every_user(trained, demo_small):
    _, _, results, _ = trained
    assert results["trending"].success
    md, rows = batch_output(results["trending"], "trending")
    users = set(pd.read_csv(demo_small / "interactions.csv", dtype=str)["USER_ID"])
    assert md["path"].value.endswith("all-users.jsonl.out")
    assert {r["input"]["userId"] for r in rows} == users
    assert all(r["error"] is None and len(r["output"]["recommendedItems"]) == 7 for r in rows)


def test_metric_attribution_reports_per_source_and_day(demo_small, tmp_path):
    events = pd.read_csv(demo_small / "interactions.csv")
    events["EVENT_ATTRIBUTION_SOURCE"] = events.index.map(lambda i: ("foryou", "email", "")[i % 3])
    (tmp_path / "dataset").mkdir()
    events.to_csv(tmp_path / "dataset" / "interactions.csv", index=False)
    defs = pipeline_defs(tmp_path / "dataset", tmp_path / "artifacts", tmp_path / "output", solutions=SOLUTIONS[1:])
    result = defs.resolve_job_def("attribute_metrics").execute_in_process(instance=dg.DagsterInstance.ephemeral())
    md = result.asset_materializations_for_node("metric_attribution")[-1].metadata
    sources = events["EVENT_ATTRIBUTION_SOURCE"].fillna("").replace("", "UNATTRIBUTED")
    assert md["present"].value is True and md["sources"].value == 3 and md["events"].value == len(events)
    for source in ("foryou", "email", "UNATTRIBUTED"):
        mine = events[sources == source]
        assert md[f"events/{source}"].value == len(mine)
        assert md[f"event_value_sum/{source}"].value == pytest.approx(mine["EVENT_VALUE"].fillna(0).sum())
    report = pd.read_csv(str(md["path"].value))
    assert report["events"].sum() == len(events) and set(report["source"]) == {"foryou", "email", "UNATTRIBUTED"}
    table = md["by_source_and_day"].value
    assert "| source | day | click events | click value |" in table and table.count("| foryou |") == min(
        14, report["day"].nunique()
    )
    assert md["plot"].value.startswith("![metric attribution by day](data:image/png;base64,")

    # without the column: materialized, with a note
    plain = defs.resolve_job_def("attribute_metrics")
    events.drop(columns=["EVENT_ATTRIBUTION_SOURCE"]).to_csv(tmp_path / "dataset" / "interactions.csv", index=False)
    md = (
        plain.execute_in_process(instance=dg.DagsterInstance.ephemeral())
        .asset_materializations_for_node("metric_attribution")[-1]
        .metadata
    )
    assert md["present"].value is False and "EVENT_ATTRIBUTION_SOURCE" in md["note"].value


def test_delete_users_job_removes_rows_and_versions_and_shows_no_id(trained):
    defs, instance, _, tmp = trained
    dataset = tmp / "dataset"
    before = pd.read_csv(dataset / "interactions.csv", dtype=str)
    gone = sorted(before["USER_ID"].unique())[:3]
    (tmp / "forget.csv").write_text("USER_ID\n" + "\n".join(gone) + "\n")
    job = defs.resolve_job_def("delete_users")

    def run(remove):
        config = {
            "ops": {"delete_user_data": {"config": {"users_file": str(tmp / "forget.csv"), "remove_versions": remove}}}
        }
        result = job.execute_in_process(run_config=config, instance=instance)
        logs = json.dumps([str(e.dagster_event) + str(e.user_message) for e in instance.all_logs(result.run_id)])
        return result.output_for_node("delete_user_data"), result, logs

    summary, result, logs = run(False)
    after = pd.read_csv(dataset / "interactions.csv", dtype=str)
    assert len(after) == len(before) - before["USER_ID"].isin(gone).sum() and not after["USER_ID"].isin(gone).any()
    assert not pd.read_csv(dataset / "users.csv", dtype=str)["USER_ID"].isin(gone).any()
    assert summary["rows_deleted"]["users"] == 3 and summary["users_requested"] == 3
    holding = summary["solution_versions_holding_users"]
    assert set(holding) == {"affinity", "trending"} and all(len(v) == 1 for v in holding.values())
    assert all((tmp / "artifacts" / "solutions" / name / "versions" / v[0]).is_dir() for name, v in holding.items())
    record = open(summary["record"]).read()
    assert summary["record"] in logs and "affinity: 1 version(s) still hold these users" in logs
    assert not any(u in record or u in logs for u in gone)  # neither the record nor the run's events name an id

    summary, result, logs = run(True)  # again, removing the versions: nothing left to delete
    assert sum(summary["rows_deleted"].values()) == 0 and summary["solution_versions_holding_users"] == holding
    assert not any((tmp / "artifacts" / "solutions" / name / "versions" / v[0]).exists() for name, v in holding.items())
    assert not any(u in logs for u in gone)
