"""Schedules and sensors evaluated with Dagster's test contexts: the UPDATE schedule skips
with a reason until there is a FULL version and new data; the file sensor requests one run
per new or changed file (local folder and S3 prefix) and none on a second look; failed
runs are recorded."""

import datetime as dt
import json
import shutil

import dagster as dg
import pandas as pd
import pytest
from pipeline_resources import pipeline_defs, pipeline_resources

from assets.definitions import build_definitions
from assets.resources import S3Settings
from assets.sensors import record_run_failures
from personalize_pipeline.config import load_config
from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.features import featurize
from personalize_pipeline.training import SolutionConfig, train


def add_interactions(dataset, n=40):
    """A new file of events in the interactions/ folder, as an hourly export delivers them."""
    files = sorted((dataset / "interactions").glob("*.csv"))
    df = pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False) for f in files])
    new = df.sample(n, random_state=len(df)).assign(TIMESTAMP=str(int(df["TIMESTAMP"].astype(int).max()) + 3600))
    path = dataset / "interactions" / f"hour-{len(files):03d}.csv"
    new.to_csv(path, index=False)
    return path


def train_full(dataset, artifacts):
    train(
        featurize(read_dataset_group(dataset)), SolutionConfig("aws-popularity-count"), artifacts / "solutions" / "demo"
    )


@pytest.fixture
def dataset(demo_small, tmp_path):
    path = tmp_path / "dataset"
    shutil.copytree(demo_small, path)
    shutil.rmtree(path / "batch-input", ignore_errors=True)
    (path / "interactions").mkdir()
    shutil.move(path / "interactions.csv", path / "interactions" / "hour-000.csv")
    return path


def test_update_schedule_skips_until_full_version_and_new_data(dataset, tmp_path):
    defs = pipeline_defs(dataset, tmp_path / "artifacts", tmp_path / "output")
    resources = defs.resources
    update_job = defs.resolve_job_def("demo__update")
    two_hourly_update = defs.resolve_schedule_def("demo__two_hourly_update")
    first = dt.datetime(2026, 11, 22, 4, tzinfo=dt.UTC)
    ticks = [first + dt.timedelta(hours=2 * i) for i in range(4)]

    def evaluate(tick):
        with dg.build_schedule_context(scheduled_execution_time=tick, resources=resources) as context:
            return two_hourly_update.evaluate_tick(context)

    result = evaluate(ticks[0])
    assert result.run_requests == [] and "no FULL solution version" in result.skip_message

    train_full(dataset, tmp_path / "artifacts")
    result = evaluate(ticks[1])
    assert result.run_requests == [] and "no new data since solution version" in result.skip_message

    add_interactions(dataset)
    [request] = evaluate(ticks[2]).run_requests
    assert dg.validate_run_config(update_job, request.run_config or {})
    assert request.run_key == f"demo-update-{ticks[2].isoformat()}"
    assert request.run_config["ops"]["demo__solution_version"]["config"]["training_mode"] == "UPDATE"
    assert "interactions/hour-001.csv" in request.tags["personalize/reason"]

    shutil.rmtree(dataset)
    result = evaluate(ticks[3])
    assert result.run_requests == [] and "cannot look for new data" in result.skip_message


def test_weekly_full_schedule_and_configurable_cron(tmp_path):
    defs = build_definitions(load_config("personalize.yaml"))
    full_job = defs.resolve_job_def("demo__full_retrain")
    weekly, update = (
        defs.resolve_schedule_def("demo__weekly_full_retrain"),
        defs.resolve_schedule_def("demo__two_hourly_update"),
    )
    [request] = weekly.evaluate_tick(
        dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 22, 3, tzinfo=dt.UTC))
    ).run_requests
    assert dg.validate_run_config(full_job, request.run_config)
    assert weekly.cron_schedule == "0 3 * * 0" and update.cron_schedule == "0 */2 * * *"
    for schedule in (weekly, update):
        assert schedule.execution_timezone == "UTC" and schedule.default_status == dg.DefaultScheduleStatus.STOPPED

    config = tmp_path / "personalize.yaml"
    config.write_text(
        "solutions:\n"
        "  - {name: paris, schedules: {full: '30 1 * * 6', update: '15 * * * *', timezone: Europe/Paris}}\n"
        "  - {name: tokyo, schedules: {timezone: Asia/Tokyo}}\n"
    )
    defs = build_definitions(load_config(config))
    schedules = {s.name: (s.cron_schedule, s.execution_timezone) for s in defs.schedules}
    assert schedules == {
        "paris__weekly_full_retrain": ("30 1 * * 6", "Europe/Paris"),
        "paris__two_hourly_update": ("15 * * * *", "Europe/Paris"),
        "tokyo__weekly_full_retrain": ("0 3 * * 0", "Asia/Tokyo"),
        "tokyo__two_hourly_update": ("0 */2 * * *", "Asia/Tokyo"),
    }


def _sensor(defs, cursor, resources=None):
    with dg.build_sensor_context(cursor=cursor, resources=resources or defs.resources, definitions=defs) as context:
        return defs.resolve_sensor_def("new_dataset_files").evaluate_tick(context)


def test_file_sensor_requests_one_run_per_new_file_locally(dataset, tmp_path):
    defs = pipeline_defs(dataset, tmp_path / "artifacts", tmp_path / "output")
    assert defs.resolve_sensor_def("new_dataset_files").default_status == dg.DefaultSensorStatus.STOPPED

    # first look, no FULL version yet: one validation run for the three files
    result = _sensor(defs, None)
    [request] = result.run_requests
    assert request.job_name == "validate_dataset"
    assert request.tags["personalize/new_files"] == "interactions/hour-000.csv,items.csv,users.csv"
    observed = {e.asset_key.to_user_string(): e.tags["dagster/data_version"] for e in result.asset_events}
    assert set(observed) == {"raw_interactions", "raw_items", "raw_users"}
    cursor = result.cursor

    again = _sensor(defs, cursor)
    assert again.run_requests == [] and "no new or changed dataset files" in again.skip_message
    assert again.cursor in (None, cursor)

    train_full(dataset, tmp_path / "artifacts")
    add_interactions(dataset)
    result = _sensor(defs, cursor)
    [request] = result.run_requests
    assert request.job_name == "demo__update" and request.tags["personalize/new_files"] == "interactions/hour-001.csv"
    assert [e.asset_key.to_user_string() for e in result.asset_events] == ["raw_interactions"]
    assert result.asset_events[0].tags["dagster/data_version"] != observed["raw_interactions"]
    assert _sensor(defs, result.cursor).run_requests == []
    job = defs.resolve_job_def(request.job_name)
    assert dg.validate_run_config(job, request.run_config)
    assert request.run_config["ops"]["demo__batch_inference_output"]["config"]["num_results"] == 25


def test_file_sensor_on_an_s3_prefix(dataset, tmp_path, s3_bucket):
    server, bucket = s3_bucket
    fs = server.filesystem("test", "test-secret")
    prefix = f"{bucket.removeprefix('s3://')}/dataset"
    fs.put_file(str(dataset / "interactions" / "hour-000.csv"), f"{prefix}/interactions.csv")
    s3 = S3Settings(endpoint_url=server.endpoint_url, access_key_id="test", secret_access_key="test-secret")
    defs = pipeline_defs(f"{bucket}/dataset", f"{bucket}/artifacts", f"{bucket}/output", s3=s3)

    first = _sensor(defs, None)
    assert [r.tags["personalize/new_files"] for r in first.run_requests] == ["interactions.csv"]
    assert _sensor(defs, first.cursor).run_requests == []
    fs.put_file(str(dataset / "items.csv"), f"{prefix}/items.csv")
    second = _sensor(defs, first.cursor)
    assert [r.tags["personalize/new_files"] for r in second.run_requests] == ["items.csv"]
    fs.put_file(str(add_interactions(dataset)), f"{prefix}/interactions.csv")  # replaced: new ETag
    third = _sensor(defs, second.cursor)
    assert [r.tags["personalize/new_files"] for r in third.run_requests] == ["interactions.csv"]
    assert _sensor(defs, third.cursor).run_requests == []


def test_failed_run_is_recorded(tmp_path):
    @dg.op
    def load_from_s3():
        raise RuntimeError("S3 answered 503 SlowDown")

    @dg.job(tags={"personalize/solution": "demo"})
    def nightly():
        load_from_s3()

    instance = dg.DagsterInstance.ephemeral()
    result = nightly.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE]
    resources = pipeline_resources(tmp_path / "d", tmp_path / "artifacts", tmp_path / "o")
    with dg.build_run_status_sensor_context(
        sensor_name="record_run_failures",
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        dagster_event=failure,
        resources={"artifact_store": resources["artifact_store"]},
    ) as context:
        record_run_failures(context.for_run_failure())
    [path] = (tmp_path / "artifacts" / "failures").glob(f"*-{result.run_id}.json")
    record = json.loads(path.read_text())
    assert record["job"] == "nightly" and record["failed_steps"] == ["load_from_s3"]
    assert "503 SlowDown" in record["step_errors"][0] and record["tags"]["personalize/solution"] == "demo"
