"""The cluster configurations under deploy/ are valid for the executors and run launcher
they name (dagster-k8s, dagster-celery), and the jobs load with each executor."""

from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config

from assets.definitions import build_definitions
from assets.executors import build_executor
from personalize_pipeline.config import parse_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.parametrize("name, executor", [("personalize.k8s.yaml", "k8s"), ("personalize.celery.yaml", "celery")])
def test_cluster_executor_config_is_valid(name, executor, monkeypatch):
    monkeypatch.setenv("CELERY_BROKER_URL", "pyamqp://guest@localhost//")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "rpc://")
    config = parse_config(yaml.safe_load((DEPLOY / name).read_text()), name)
    assert all(v.startswith("s3://") for v in config.locations.model_dump().values()), (
        "artifacts must travel through S3"
    )
    spec = config.runs.executor
    executor_def = build_executor({"kind": spec.kind})
    assert executor_def.name == executor
    defs = build_definitions(config, executor=executor_def)
    dg.Definitions.validate_loadable(defs)
    for job_name, mode in (("demo__full_retrain", "FULL"), ("demo__update", "UPDATE")):
        job = defs.resolve_job_def(job_name)
        run_config = {
            "execution": {"config": spec.config},
            "ops": {"demo__solution_version": {"config": {"training_mode": mode}}},
        }
        assert dg.validate_run_config(job, run_config)
    if executor == "k8s":  # per-step settings name real step keys
        assert set(spec.config["per_step_k8s_config"]) <= {
            n.name for n in defs.resolve_job_def("demo__full_retrain").graph.node_defs
        }
    bad = {"execution": {"config": {**spec.config, "no_such_option": 1}}}
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(defs.resolve_job_def("demo__update"), bad)


def test_default_executor_is_multiprocess():
    from assets.definitions import defs

    assert build_executor().name == "multiprocess"
    assert defs.resolve_job_def("demo__full_retrain").executor_def.name == "multiprocess"
    with pytest.raises(ValueError, match="runs.executor.kind must be one of"):
        build_executor({"kind": "slurm"})


def test_k8s_instance_run_launcher_config_is_valid():
    from dagster_k8s import K8sRunLauncher

    instance = yaml.safe_load((DEPLOY / "dagster.k8s.yaml").read_text())
    assert instance["run_launcher"]["class"] == "K8sRunLauncher"
    result = process_config(K8sRunLauncher.config_type(), instance["run_launcher"]["config"])
    assert result.success, result.errors
    # every instance configuration keeps the one-run-per-solution limit of dagster.yaml
    limits = yaml.safe_load((DEPLOY.parent / "dagster.yaml").read_text())["concurrency"]["runs"][
        "tag_concurrency_limits"
    ]
    for name in ("dagster.k8s.yaml", "dagster.postgres.yaml"):
        assert yaml.safe_load((DEPLOY / name).read_text())["concurrency"]["runs"]["tag_concurrency_limits"] == limits, (
            name
        )


def test_helm_values_match_the_instance_and_the_image():
    values = yaml.safe_load((DEPLOY / "helm-values.yaml").read_text())
    limits = yaml.safe_load((DEPLOY.parent / "dagster.yaml").read_text())["concurrency"]["runs"][
        "tag_concurrency_limits"
    ]
    queue = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queue["tagConcurrencyLimits"] == limits
    assert values["runLauncher"]["type"] == "K8sRunLauncher" and values["postgresql"]["enabled"] is False
    [deployment] = values["dagster-user-deployments"]["deployments"]
    cmd = next(line for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line.startswith("CMD"))
    assert " ".join(f'"{a}"' for a in deployment["dagsterApiGrpcArgs"]).replace('" "', '", "') in cmd
    assert f'"{deployment["port"]}"' in cmd
    # the step Jobs and the runs use the secret personalize.k8s.yaml names
    k8s = yaml.safe_load((DEPLOY / "personalize.k8s.yaml").read_text())["runs"]["executor"]["config"]
    assert values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"] == [{"name": s} for s in k8s["env_secrets"]]


def test_a_config_file_that_did_not_travel_is_an_error_not_local_defaults(tmp_path, monkeypatch):
    """A worker started elsewhere with a relative PERSONALIZE_CONFIG used to fall back to the
    defaults' local folders and write artifacts to its own disk without a word."""
    from assets.settings import settings
    from personalize_pipeline.errors import InputError

    monkeypatch.chdir(tmp_path)
    for name in ("PERSONALIZE_DATASET", "PERSONALIZE_ARTIFACTS", "PERSONALIZE_OUTPUT", "PERSONALIZE_BATCH_INPUT"):
        monkeypatch.delenv(name, raising=False)  # `make test` sets them; they would win over the file
    monkeypatch.setenv("PERSONALIZE_CONFIG", "deploy/personalize.celery.yaml")
    settings.cache_clear()
    try:
        with pytest.raises(
            InputError,
            match=(
                r"PERSONALIZE_CONFIG=deploy/personalize.celery.yaml: configuration file does not exist \(working "
                r"directory"
            ),
        ):
            settings()
        monkeypatch.setenv("PERSONALIZE_CONFIG", str(DEPLOY / "personalize.celery.yaml"))
        settings.cache_clear()
        assert settings().locations.artifacts == "s3://my-bucket/personalize/artifacts"
    finally:
        monkeypatch.undo()
        settings.cache_clear()
