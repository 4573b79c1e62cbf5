"""Sensors: new dataset files start an UPDATE (or a validation run while there is no FULL
version yet); failed runs are recorded under the artifacts location. Both shipped stopped."""

import datetime as dt
import json

import dagster as dg

from personalize_pipeline.changes import changed_files, dataset_files, digest
from personalize_pipeline.errors import InputError
from personalize_pipeline.store import read_index

from .jobs import update, validate_dataset
from .resources import ArtifactStore, DatasetSource, SolutionResource
from .settings import settings


@dg.sensor(
    name="new_dataset_files",
    jobs=[update, validate_dataset],
    minimum_interval_seconds=int(settings()["sensors"]["new_dataset_files"]["minimum_interval_seconds"]),
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Watches the dataset location (folder or S3 prefix) for new or changed interactions / items / users "
        "files; each file version (name, size, ETag or mtime) is handled once (the cursor remembers them)."
    ),
)
def new_dataset_files(
    context: dg.SensorEvaluationContext, dataset_source: DatasetSource, artifact_store: ArtifactStore, solution: SolutionResource
):
    seen = json.loads(context.cursor) if context.cursor else {}
    try:
        current = dataset_files(dataset_source.root())
        index = read_index(artifact_store.solution(solution.name))
    except InputError as exc:
        return dg.SkipReason(f"cannot list {dataset_source.location}: {exc.message}")
    changed = changed_files(current, seen)
    if not changed:
        return dg.SkipReason(f"no new or changed dataset files in {dataset_source.location}")
    job = update if index and index.get("latest_full") else validate_dataset
    context.log.info(f"{', '.join(changed)} new or changed: requesting {job.name}")
    observations = [
        dg.AssetObservation(
            f"raw_{name.split('.', 1)[0]}",
            metadata={"file": dg.MetadataValue.path(dataset_source.root().child(name).url), "signature": current[name]},
            tags={"dagster/data_version": digest({name: current[name]})},
        )
        for name in changed
    ]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"{job.name}-{digest(current)}",
                job_name=job.name,
                tags={"personalize/new_files": ",".join(changed)},
            )
        ],
        asset_events=observations,
        cursor=json.dumps(current, sort_keys=True),
    )


def _root_message(error) -> str:
    """The innermost error's message (Dagster wraps what the step raised)."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


@dg.run_failure_sensor(
    name="record_run_failures",
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Records each failed run as <artifacts>/failures/<time>-<run id>.json and in the sensor's log.",
)
def record_run_failures(context: dg.RunFailureSensorContext, artifact_store: ArtifactStore):
    run = context.dagster_run
    steps = [e.step_key for e in context.get_step_failure_events()]
    messages = [_root_message(e.event_specific_data.error) for e in context.get_step_failure_events() if e.event_specific_data.error]
    now = dt.datetime.now(dt.timezone.utc)
    record = {
        "run_id": run.run_id,
        "job": run.job_name,
        "failed_at": now.isoformat(timespec="seconds"),
        "tags": dict(run.tags),
        "failed_steps": steps,
        "step_errors": messages,
        "message": context.failure_event.message,
    }
    location = artifact_store.root().child("failures", f"{now.strftime('%Y%m%dT%H%M%SZ')}-{run.run_id}.json")
    location.write_json(record)
    context.log.error(json.dumps({"event": "run_failure", "record": location.url, **{k: record[k] for k in ("run_id", "job", "failed_steps")}}))
    return dg.SkipReason(f"recorded failure of run {run.run_id} ({run.job_name}) at {location.url}")
