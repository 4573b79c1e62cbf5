"""A FULL → UPDATE → UPDATE cycle on demo data, new interactions delivered between runs as
new files of the interactions/ folder (INCREMENTAL imports), as the schedules drive it: three
batch outputs, each in its own solution-version/run folder, ``latest.json`` following the
newest, the UPDATE schedule skipping when nothing is new."""

import datetime as dt
import json
import shutil

import dagster as dg
import pandas as pd
from pipeline_resources import key, pipeline_defs

from personalize_pipeline.store import read_index


def test_full_update_update_cycle(demo_small, tmp_path):
    dataset, artifacts, output = tmp_path / "dataset", tmp_path / "artifacts", tmp_path / "output"
    shutil.copytree(demo_small, dataset)
    (dataset / "interactions").mkdir()
    shutil.move(dataset / "interactions.csv", dataset / "interactions" / "day-0.csv")
    job_input = str(dataset / "batch-input" / "users.jsonl")
    defs = pipeline_defs(
        dataset, artifacts, output, keep_full_versions=1, batch_inference={"input": job_input, "num_results": 5}
    )
    resources = defs.resources
    two_hourly_update = defs.resolve_schedule_def("demo__two_hourly_update")
    instance = dg.DagsterInstance.ephemeral()
    interactions = pd.read_csv(dataset / "interactions" / "day-0.csv", dtype=str, keep_default_na=False)
    tick = dt.datetime(2026, 11, 23, 2, tzinfo=dt.UTC)

    def schedule_says():
        with dg.build_schedule_context(scheduled_execution_time=tick, resources=resources) as context:
            return two_hourly_update.evaluate_tick(context)

    runs = []
    for step, job in enumerate(("demo__full_retrain", "demo__update", "demo__update")):
        run_config = None  # the job's default run config: the solution's batch_inference section
        if job == "demo__update":
            assert "no new data" in schedule_says().skip_message
            # a new day of events: users come back to items they did not see before
            new = interactions.sample(300, random_state=step).assign(
                TIMESTAMP=str(int(interactions["TIMESTAMP"].astype(int).max()) + 86400 * step),
                ITEM_ID=lambda d, seed=step: d["ITEM_ID"].sample(frac=1, random_state=seed).to_numpy(),
            )
            interactions = pd.concat([interactions, new])
            new.to_csv(dataset / "interactions" / f"day-{step}.csv", index=False)
            [request] = schedule_says().run_requests
            assert f"interactions/day-{step}.csv" in request.tags["personalize/reason"]
            run_config = request.run_config
        result = defs.resolve_job_def(job).execute_in_process(
            instance=instance, raise_on_error=False, run_config=run_config
        )
        assert result.success, job
        version = instance.get_latest_materialization_event(
            key("demo", "solution_version")
        ).asset_materialization.metadata
        out = instance.get_latest_materialization_event(
            key("demo", "batch_inference_output")
        ).asset_materialization.metadata
        runs.append(
            (result.run_id, version["solution_version"].value, version["training_mode"].value, out["path"].value)
        )
        latest = json.loads((output / "demo" / "latest.json").read_text())
        assert (latest["run_id"], latest["solution_version"], latest["output"]) == (
            result.run_id,
            runs[-1][1],
            runs[-1][3],
        )

    assert [mode for _, _, mode, _ in runs] == ["FULL", "UPDATE", "UPDATE"]
    outs = sorted(output.rglob("*.out"))
    assert len(outs) == 3
    for run_id, version_id, _, path in runs:
        assert path == str(output / "demo" / version_id / run_id / "users.jsonl.out")
        lines = [json.loads(line) for line in open(path)]
        assert lines and all(len(row["output"]["recommendedItems"]) == 5 for row in lines)
    # each UPDATE starts from the version before it; the retention (1 FULL) keeps the chain
    index = read_index(artifacts / "solutions" / "demo")
    assert [v["id"] for v in index["versions"]] == [v for _, v, _, _ in runs]
    assert [v["base_version"] for v in index["versions"][1:]] == [runs[0][1], runs[1][1]]
    # the UPDATE runs read only the new files: no validated snapshot of the whole dataset
    assert len(list((artifacts / "validated" / "interactions").iterdir())) == 1
    # the data moved: the second UPDATE's recommendations differ from the FULL's for some user
    first, last = (open(runs[i][3]).read().splitlines() for i in (0, 2))
    assert first != last
    assert schedule_says().run_requests == []
