"""Sensors: new dataset files start an UPDATE of each solution (or a validation run while no
solution has a FULL version yet); failed runs are recorded under the artifacts location.
Both shipped stopped. (Each solution's batch shard sensor is in batch_jobs.py.)"""

import datetime as dt
import json
from typing import Any

import dagster as dg

from personalize_pipeline.changes import changed_files, dataset_files, digest
from personalize_pipeline.config import PipelineConfig
from personalize_pipeline.errors import InputError
from personalize_pipeline.store import read_index

from .jobs import run_config
from .resources import ArtifactStore, DatasetSource


def new_dataset_files_sensor(
    config: PipelineConfig,
    update_jobs: dict[str, Any],
    validate_job: Any,  # asset jobs (resolved by Definitions)
) -> dg.SensorDefinition:
    """One sensor for the dataset group: new or changed files start an UPDATE of every
    solution that has a FULL version (with its batch_inference run config), or a
    validation run while none has one."""
    solutions = {s.name: s for s in config.solutions}

    @dg.sensor(
        name="new_dataset_files",
        jobs=[*update_jobs.values(), validate_job],
        minimum_interval_seconds=config.sensors.new_dataset_files.minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "Watches the dataset location (folder or S3 prefix) for new or changed interactions / items / users "
            "files; each file version (name, size, ETag or mtime) is handled once (the cursor remembers them). "
            "Requests an UPDATE of each solution with a FULL version, or validate_dataset while none has one."
        ),
    )
    def new_dataset_files(
        context: dg.SensorEvaluationContext, dataset_source: DatasetSource, artifact_store: ArtifactStore
    ):
        seen = json.loads(context.cursor) if context.cursor else {}
        try:
            current = dataset_files(dataset_source.root())
            trained = [n for n in solutions if (read_index(artifact_store.solution(n)) or {}).get("latest_full")]
        except InputError as exc:
            return dg.SkipReason(f"cannot list {dataset_source.location}: {exc.message}")
        changed = changed_files(current, seen)
        if not changed:
            return dg.SkipReason(f"no new or changed dataset files in {dataset_source.location}")
        requests = [
            dg.RunRequest(
                run_key=f"{update_jobs[n].name}-{digest(current)}",
                job_name=update_jobs[n].name,
                run_config=run_config(solutions[n], "UPDATE"),
                tags={"personalize/new_files": ",".join(changed)},
            )
            for n in trained
        ] or [
            dg.RunRequest(
                run_key=f"{validate_job.name}-{digest(current)}",
                job_name=validate_job.name,
                tags={"personalize/new_files": ",".join(changed)},
            )
        ]
        context.log.info(
            f"{', '.join(changed)} new or changed: requesting {', '.join(str(r.job_name) for r in requests)}"
        )
        observations = [
            dg.AssetObservation(
                f"raw_{name.split('/', 1)[0].split('.', 1)[0]}",
                metadata={
                    "file": dg.MetadataValue.path(dataset_source.root().child(name).url),
                    "signature": current[name],
                },
                tags={"dagster/data_version": digest({name: current[name]})},
            )
            for name in changed
        ]
        return dg.SensorResult(
            run_requests=requests, asset_events=observations, cursor=json.dumps(current, sort_keys=True)
        )

    return new_dataset_files


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
    messages = [
        _root_message(e.step_failure_data.error) for e in context.get_step_failure_events() if e.step_failure_data.error
    ]
    now = dt.datetime.now(dt.UTC)
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
    context.log.error(
        json.dumps(
            {
                "event": "run_failure",
                "record": location.url,
                **{k: record[k] for k in ("run_id", "job", "failed_steps")},
            }
        )
    )
    return dg.SkipReason(f"recorded failure of run {run.run_id} ({run.job_name}) at {location.url}")
