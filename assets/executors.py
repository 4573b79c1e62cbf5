"""The executor of the jobs, chosen in personalize.yaml (``runs: executor:``).

- ``multiprocess`` (default): one process per step on this machine.
- ``in_process``: every step in the run's own process (debugging, small machines).
- ``k8s``: one Kubernetes Job per step (dagster-k8s, ``pip install '.[cluster]'``).
- ``celery``: steps as Celery tasks on a broker's workers (dagster-celery).

No I/O manager carries data between steps: each asset writes its artifacts to the artifact
store (``locations.artifacts``, an ``s3://`` prefix on a cluster) and records the path in
its materialization, which the next step reads from the instance (Postgres on a cluster).
That is what lets steps of one run execute on different machines.
"""

import dagster as dg

from personalize_pipeline.config import Executor

from .settings import settings

EXECUTORS = ("multiprocess", "in_process", "k8s", "celery")


def build_executor(spec: Executor | dict | None = None) -> dg.ExecutorDefinition:
    spec = spec if spec is not None else settings().runs.executor
    if isinstance(spec, Executor):
        spec = spec.model_dump()
    kind, config = spec.get("kind", "multiprocess"), spec.get("config") or {}
    if kind == "multiprocess":
        return dg.multiprocess_executor.configured(config) if config else dg.multiprocess_executor
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured(config) if config else k8s_job_executor
    if kind == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(config) if config else celery_executor
    raise ValueError(f"runs.executor.kind must be one of {', '.join(EXECUTORS)}, got {kind!r}")
