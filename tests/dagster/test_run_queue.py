"""No overlap: with the run queue of dagster.yaml, a FULL and an UPDATE of the same solution
(or two FULLs) never run at once, while another solution's run goes ahead.

Runs are submitted to a real instance with the QueuedRunCoordinator configured from the
project's dagster.yaml, and the queue daemon's own iteration decides what starts; the run
launcher is Dagster's test launcher, which records launches without executing, so the
test takes no training time."""

import os
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import (
    MockedRunLauncher,
    create_run_for_test,
    create_test_daemon_workspace_context,
    load_remote_repo,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

ROOT = Path(__file__).resolve().parents[2]


def test_runs_of_one_solution_are_serialized(tmp_path):
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "personalize/solution", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    overrides = {
        "concurrency": config["concurrency"],
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"},
        "run_launcher": {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"},
    }
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="assets.definitions", attribute="defs", working_directory=str(ROOT)),
        location_name="personalize_pipeline",
    )
    with dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path)) as instance:
        with create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin), instance) as workspace:
            repo = load_remote_repo(workspace, "__repository__")

            def submit(job_name: str, solution: str) -> str:
                remote_job = repo.get_full_job(job_name)
                tags = {**remote_job.tags, "personalize/solution": solution}
                run = create_run_for_test(
                    instance,
                    job_name=job_name,
                    tags=tags,
                    remote_job_origin=remote_job.get_remote_origin(),
                    job_code_origin=remote_job.get_python_origin(),
                )
                instance.submit_run(run.run_id, workspace.create_request_context())
                return run.run_id

            def tick():
                list(QueuedRunCoordinatorDaemon(interval_seconds=1).run_iteration(workspace))

            def status(run_id: str) -> dg.DagsterRunStatus:
                return instance.get_run_by_id(run_id).status

            full = submit("demo__full_retrain", "demo")
            update = submit("demo__update", "demo")
            full_again = submit("demo__full_retrain", "demo")
            other = submit("demo__update", "another-solution")
            assert {status(r) for r in (full, update, full_again, other)} == {dg.DagsterRunStatus.QUEUED}

            tick()
            launcher = instance.run_launcher
            assert isinstance(launcher, MockedRunLauncher)
            assert launcher.did_run_launch(full) and launcher.did_run_launch(other)
            assert status(update) == status(full_again) == dg.DagsterRunStatus.QUEUED

            tick()  # still running: nothing else of "demo" starts
            assert status(update) == status(full_again) == dg.DagsterRunStatus.QUEUED

            instance.report_run_failed(instance.get_run_by_id(full))  # the FULL ends (any end frees the slot)
            tick()
            assert launcher.did_run_launch(update) and status(full_again) == dg.DagsterRunStatus.QUEUED

            instance.report_run_failed(instance.get_run_by_id(update))
            tick()
            assert launcher.did_run_launch(full_again)
    assert os.environ.get("DAGSTER_HOME") != str(tmp_path)
