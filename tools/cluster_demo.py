"""``make cluster-demo``: the pipeline on a real, if local, cluster.

Starts, on 127.0.0.1 only: SeaweedFS as S3 (dataset, artifacts, outputs; credentials
required), Redis as the Celery broker and result backend, PostgreSQL as the Dagster instance
storage (deploy/dagster.postgres.yaml), the code location as a gRPC server, the Dagster daemon
(run queue, sensors) and two Celery workers (``dagster-celery worker start``, deploy/celery.yaml)
each in its own working directory, as on separate machines. The pipeline's configuration is
deploy/personalize.celery.yaml with the S3 locations filled in.

Then, through the instance: the FULL retrain job with the Celery executor on the demo dataset
in S3; then the batch job over N input shards, whose partitions and runs the shard sensor
creates, all running at once. It checks that every run succeeded, that at least two workers
executed steps, that every recorded artifact and output is on S3 (and the ``.out`` files are
there) and that nothing was written into the processes' working directories; stops everything
it started, by process id; and prints one JSON line last:
``{"runs": [...], "workers": [...], "outputs": [...], "seconds": ...}``. Exit 0 only when all
runs succeeded and the checks hold.

    .venv/bin/python tools/cluster_demo.py [--recipe aws-hrnn] [--shards 4] [--interactions 60000 ...]

The jobs are found by listing the code location's jobs (``FULL_JOB`` and ``SHARD_JOB`` are
patterns, ``--full-job`` / ``--shard-job`` name them exactly); tests/dagster/test_cluster_demo.py
runs the same at a small scale.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # SeaweedS3: the project's SeaweedFS launcher
sys.path.insert(0, str(ROOT / "tools"))

from cluster_services import HOST, Postgres, Process, Redis, ServiceError, free_port, log_tail, wait_until  # noqa: E402
from s3server import SeaweedS3  # noqa: E402

# Job and sensor names, matched against the code location's listing: "full_retrain" today,
# "<solution>__full_retrain" once every solution has its own jobs.
FULL_JOB = r"(^|__)full_retrain$"
SHARD_JOB = r"(^|__)batch_jobs$"
SHARD_SENSOR = r"(^|__)batch_job_shards$"
BUCKET = "personalize-demo"
WORKERS = ("worker-a", "worker-b")
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
LOCATION_VARIABLES = {
    "dataset": "PERSONALIZE_DATASET",
    "artifacts": "PERSONALIZE_ARTIFACTS",
    "output": "PERSONALIZE_OUTPUT",
    "batch_input": "PERSONALIZE_BATCH_INPUT",
}


@dataclass
class DemoOptions:
    recipe: str = "aws-popularity-count"
    users: int = 2000
    items: int = 1000
    interactions: int = 60_000
    shards: int = 4
    worker_concurrency: int = 2
    timeout: float = 1800.0
    full_job: str | None = None
    shard_job: str | None = None
    solution: str | None = None  # with several solutions: whose jobs to run
    workdir: Path | None = None  # kept afterwards when given


def say(message: str) -> None:
    print(f"[cluster-demo {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Cluster:
    """The services, started in order and stopped in reverse (by process id) on exit."""

    def __init__(self, work: Path, options: DemoOptions):
        self.work, self.options = work, options
        self.stack = contextlib.ExitStack()
        self.processes: dict[str, Process] = {}

    def __enter__(self) -> Cluster:
        try:
            self._start()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        say("stopping every service started (by process id)")
        self.stack.close()

    def _start(self) -> None:
        w = self.work
        self.s3 = self.stack.enter_context(
            SeaweedS3(access_key=uuid.uuid4().hex[:16], secret_key=uuid.uuid4().hex, data_dir=w / "s3")
        )
        say(f"SeaweedFS S3 at {self.s3.endpoint_url} (pid {self.s3.pid})")
        self.s3.make_bucket(BUCKET)
        self.redis = Redis(w / "redis")
        self.stack.callback(self.redis.stop)
        say(f"Redis at {self.redis.url} (pid {self.redis.process.pid})")
        self.postgres = Postgres(w / "postgres")
        self.stack.callback(self.postgres.stop)
        say(f"PostgreSQL on port {self.postgres.port} (pid {self.postgres.process.pid})")
        self.env = self._environment()
        self._use_environment()  # this process reads the instance too
        self.grpc_port = free_port()
        self._spawn(
            "code-server",
            ["dagster", "api", "grpc", "-m", "assets.definitions", "-a", "defs", "-h", HOST, "-p", str(self.grpc_port)],
        )
        self._workspace()
        for name in WORKERS:
            # -i: the worker imports the code location once, before forking its pool processes
            self._spawn(
                name,
                [
                    "dagster-celery",
                    "worker",
                    "start",
                    "-A",
                    "dagster_celery.app",
                    "-y",
                    str(ROOT / "deploy" / "celery.yaml"),
                    "-i",
                    "assets.definitions",
                    "-n",
                    name,
                    "--",
                    "--concurrency",
                    str(self.options.worker_concurrency),
                ],
            )
        wait_until(
            self._code_server_serving, self.processes["code-server"], "the code location's gRPC server", timeout=300
        )
        self._spawn("daemon", ["dagster-daemon", "run", "-w", str(w / "workspace.yaml")])
        for name in WORKERS:
            wait_until(
                lambda n=name: " ready." in log_tail(self.work / "logs" / f"{n}.log", 200),
                self.processes[name],
                f"Celery {name}",
                300,
            )
        say(f"code server (pid {self.processes['code-server'].pid}), daemon, workers {', '.join(WORKERS)} up")

    def _environment(self) -> dict[str, str]:
        w = self.work
        home = w / "dagster_home"
        home.mkdir()
        shutil.copy(ROOT / "deploy" / "dagster.postgres.yaml", home / "dagster.yaml")
        config = personalize_config(self.options.recipe)
        (w / "personalize.yaml").write_text(json.dumps(config, indent=2))
        return {
            # these would win over the configuration file (the Makefile sets them to local folders)
            **{env: config["locations"][key] for key, env in LOCATION_VARIABLES.items()},
            **self.s3.aws_env(),
            **self.postgres.env(),
            "DAGSTER_HOME": str(home),
            "PERSONALIZE_CONFIG": str(w / "personalize.yaml"),
            "CELERY_BROKER_URL": self.redis.url,
            "CELERY_RESULT_BACKEND": self.redis.url,
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "MPLBACKEND": "Agg",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def _use_environment(self) -> None:
        previous = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)

        def restore() -> None:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

        self.stack.callback(restore)

    def _workspace(self) -> None:
        grpc = {"host": HOST, "port": self.grpc_port, "location_name": "personalize_pipeline"}
        (self.work / "workspace.yaml").write_text(json.dumps({"load_from": [{"grpc_server": grpc}]}))

    def _spawn(self, name: str, cmd: list[str]) -> Process:
        (self.work / "logs").mkdir(exist_ok=True)
        env = {**os.environ, **self.env}
        process = Process(name, cmd, self.work / "logs" / f"{name}.log", cwd=self.work / "cwd" / name, env=env)
        self.processes[name] = process
        self.stack.callback(process.stop)
        return process

    def _code_server_serving(self) -> bool:
        from dagster._grpc.client import DagsterGrpcClient

        try:  # the health check prints an error while nothing listens: knock first
            socket.create_connection((HOST, self.grpc_port), timeout=1).close()
        except OSError:
            return False
        return DagsterGrpcClient(port=self.grpc_port, host=HOST).health_check_query() == "SERVING"

    def dagster(self, *args: str) -> str:
        """A ``dagster`` CLI command against this cluster's workspace; its stdout."""
        cmd = ["dagster", *args, "-w", str(self.work / "workspace.yaml")]
        done = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, **self.env}, cwd=self.work, timeout=300
        )
        if done.returncode != 0:
            raise ServiceError(f"`{' '.join(cmd[:4])}` failed: {(done.stderr or done.stdout).strip()[-1500:]}")
        return done.stdout

    def check_alive(self) -> None:
        for process in self.processes.values():
            process.check_alive()


def personalize_config(recipe: str) -> dict:
    """deploy/personalize.celery.yaml with the demo's S3 locations and recipe."""
    import yaml

    config = yaml.safe_load((ROOT / "deploy" / "personalize.celery.yaml").read_text())
    config["locations"] = {
        k: f"s3://{BUCKET}/{k.replace('_', '-')}" for k in ("dataset", "artifacts", "output", "batch_input")
    }
    shipped = yaml.safe_load((ROOT / "personalize.yaml").read_text()) or {}
    if "solutions" in shipped:  # several solutions per dataset group
        config["solutions"] = [{**shipped["solutions"][0], "recipe": recipe}]
    else:
        config["solution"] = {**(shipped.get("solution") or {}), "recipe": recipe}
    return config


def upload_demo_data(cluster: Cluster, options: DemoOptions) -> None:
    """The demo dataset group to s3://BUCKET/dataset/; its batch job input, split into
    ``options.shards`` shards, to s3://BUCKET/batch-input/part-K.jsonl."""
    from personalize_pipeline.demo_data import DemoSpec, generate

    local = cluster.work / "demo-data"
    generate(local, DemoSpec(users=options.users, items=options.items, interactions=options.interactions))
    fs = cluster.s3.filesystem()
    for path in sorted(local.rglob("*")):
        if path.is_file() and path.parts[len(local.parts)] != "batch-input":
            fs.put_file(str(path), f"{BUCKET}/dataset/{path.relative_to(local).as_posix()}")
    lines = (local / "batch-input" / "users.jsonl").read_text().splitlines(keepends=True)
    for k in range(options.shards):
        fs.pipe_file(f"{BUCKET}/batch-input/part-{k}.jsonl", "".join(lines[k :: options.shards]).encode())
    shutil.rmtree(local)
    say(
        f"demo dataset ({options.interactions:,} interactions) and {options.shards} batch input shards uploaded to s3://{BUCKET}/"
    )


def pick(names: list[str], exact: str | None, pattern: str, solution: str | None, what: str) -> str:
    """The one name among ``names`` that is ``exact`` or matches ``pattern`` (and starts with
    ``solution__`` when given; the first match otherwise)."""
    if exact:
        if exact not in names:
            raise ServiceError(f"{what} {exact!r} is not in the code location (it has {', '.join(names)})")
        return exact
    found = [n for n in names if re.search(pattern, n) and (solution is None or n.startswith(f"{solution}__"))]
    if not found:
        raise ServiceError(f"no {what} matching {pattern!r} in the code location (it has {', '.join(names)})")
    return sorted(found)[0]


def listed(output: str, label: str) -> list[str]:
    """Names from ``dagster job list`` ("Job: name") or ``dagster sensor list`` ("Sensor: name")."""
    return re.findall(rf"^{label}: (\S+)", output, flags=re.MULTILINE)


def wait_for_runs(cluster: Cluster, instance, job: str, count: int, deadline: float) -> list:
    """The ``count`` runs of ``job`` once all have finished (the daemon launches them)."""
    import dagster as dg

    while True:
        runs = instance.get_runs(dg.RunsFilter(job_name=job))
        if len(runs) >= count and all(r.status.value in TERMINAL for r in runs):
            return runs
        cluster.check_alive()
        if time.monotonic() > deadline:
            states = ", ".join(f"{r.run_id[:8]} {r.status.value}" for r in runs) or "none yet"
            raise ServiceError(
                f"{job}: runs not finished in time ({states}); daemon log:\n{log_tail(cluster.work / 'logs' / 'daemon.log')}"
            )
        time.sleep(1.0)


@contextlib.contextmanager
def workdir(options: DemoOptions) -> Iterator[tuple[Path, dict]]:
    """The demo's folder and a report holder; a temporary folder is deleted afterwards
    unless the demo failed (then its logs are kept and named)."""
    report: dict = {}
    if options.workdir is not None:
        if options.workdir.exists() and any(options.workdir.iterdir()):
            raise ServiceError(f"--workdir {options.workdir}: give a new or empty folder")
        options.workdir.mkdir(parents=True, exist_ok=True)
        options.workdir.chmod(0o711)
        yield options.workdir.resolve(), report
        return
    path = Path(tempfile.mkdtemp(prefix="cluster-demo-"))
    path.chmod(0o711)  # PostgreSQL runs as the postgres user under it
    try:
        yield path, report
    finally:
        if report and not report.get("problems"):
            shutil.rmtree(path, ignore_errors=True)
        else:
            say(f"logs kept in {path / 'logs'}")


def run_demo(options: DemoOptions) -> dict:
    """Everything ``make cluster-demo`` does; the report (see the module docstring)."""
    deadline = time.monotonic() + options.timeout
    with workdir(options) as (work, report), Cluster(work, options) as cluster:
        import dagster as dg

        upload_demo_data(cluster, options)
        jobs = listed(cluster.dagster("job", "list"), "Job")
        full_job = pick(jobs, options.full_job, FULL_JOB, options.solution, "job")
        shard_job = pick(jobs, options.shard_job, SHARD_JOB, options.solution, "job")
        with dg.DagsterInstance.get() as instance:
            say(f"launching {full_job} (Celery executor) through the instance")
            cluster.dagster("job", "launch", "-j", full_job)
            runs = wait_for_runs(cluster, instance, full_job, 1, deadline)
            say(f"{full_job}: {runs[0].status.value}")
            if runs[0].status.value == "SUCCESS":
                sensor = pick(
                    listed(cluster.dagster("sensor", "list"), "Sensor"), None, SHARD_SENSOR, options.solution, "sensor"
                )
                say(f"starting sensor {sensor}: one partition and run of {shard_job} per shard")
                cluster.dagster("sensor", "start", sensor)
                runs += wait_for_runs(cluster, instance, shard_job, options.shards, deadline)
            report.update(inspect_runs(cluster, instance, runs, shard_job))
    return report


def inspect_runs(cluster: Cluster, instance, runs: list, shard_job: str) -> dict:
    """Statuses, the Celery workers that ran steps, the outputs; what the checks found wrong."""
    import dagster as dg

    workers, recorded, from_shards = set(), {}, set()
    for run in runs:
        for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            worker = record.dagster_event.engine_event_data.metadata.get("Celery worker")
            if worker is not None:
                workers.add(str(worker.value))
        for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            metadata = record.dagster_event.step_materialization_data.materialization.metadata
            if "path" in metadata:
                lines = metadata.get("lines")
                recorded[str(metadata["path"].value)] = None if lines is None else int(lines.value)
                if run.job_name == shard_job:
                    from_shards.add(str(metadata["path"].value))
    problems = [f"run {r.run_id} ({r.job_name}) {r.status.value}" for r in runs if r.status.value != "SUCCESS"]
    if len(workers) < len(WORKERS):
        problems.append(f"steps ran on {sorted(workers)}, not on each of {list(WORKERS)}")
    problems += [f"not on S3: {path}" for path in recorded if not path.startswith("s3://")]
    outputs = {path: lines for path, lines in recorded.items() if path.endswith(".out")}
    problems += check_outputs(cluster, outputs, from_shards)
    problems += [f"written into a working directory: {p}" for p in (cluster.work / "cwd").rglob("*") if p.is_file()]
    return {
        "runs": [
            {
                "run_id": r.run_id,
                "job": r.job_name,
                "partition": r.tags.get("dagster/partition"),
                "status": r.status.value,
            }
            for r in runs
        ],
        "shard_runs_at_once": most_at_once(instance, [r for r in runs if r.job_name == shard_job]),
        "workers": sorted(workers),
        "outputs": sorted(outputs),
        "problems": problems,
    }


def most_at_once(instance, runs: list) -> int:
    """The largest number of these runs in flight at one moment: launched (a run worker
    process starting) and not yet finished."""
    import dagster as dg

    spans = []
    for record in instance.get_run_records(dg.RunsFilter(run_ids=[r.run_id for r in runs])) if runs else []:
        launched = instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_STARTING)
        begin = launched[0].timestamp if launched else record.start_time
        if begin and record.end_time:
            spans.append((begin, record.end_time))
    return max((sum(1 for s, e in spans if s <= begin < e) for begin, _ in spans), default=0)


def check_outputs(cluster: Cluster, outputs: dict[str, int | None], from_shards: set[str]) -> list[str]:
    """Each .out is on S3 with the number of lines its materialization recorded, and the
    shards' outputs together answer every line of the batch input shards."""
    fs = cluster.s3.filesystem()
    problems, shard_lines = [], 0
    for url, recorded in sorted(outputs.items()):
        if not url.startswith("s3://") or not fs.exists(url):
            problems.append(f"output not on S3: {url}")
            continue
        lines = len(fs.cat_file(url).splitlines())
        if lines == 0 or lines != recorded:
            problems.append(f"{url}: {lines} lines on S3, {recorded} recorded")
        if url in from_shards:
            shard_lines += lines
    inputs = sum(len(fs.cat_file(p).splitlines()) for p in fs.glob(f"{BUCKET}/batch-input/*.jsonl"))
    if shard_lines != inputs:
        problems.append(f"the shard outputs hold {shard_lines} lines for {inputs} input lines")
    return problems


def parse_args(argv: list[str] | None) -> DemoOptions:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--recipe",
        default="aws-popularity-count",
        help="e.g. aws-hrnn (trains for minutes on 2 cores, twice: FULL and metrics)",
    )
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--interactions", type=int, default=60_000)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--worker-concurrency", type=int, default=2)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds for the whole demo")
    p.add_argument("--full-job", help=f"the FULL retrain job (default: the job matching {FULL_JOB})")
    p.add_argument("--shard-job", help=f"the sharded batch job (default: the job matching {SHARD_JOB})")
    p.add_argument("--solution", help="with several solutions: run this one's jobs")
    p.add_argument("--workdir", type=Path, help="keep services' data and logs here (default: a temporary folder)")
    a = p.parse_args(argv)
    return DemoOptions(
        a.recipe,
        a.users,
        a.items,
        a.interactions,
        a.shards,
        a.worker_concurrency,
        a.timeout,
        a.full_job,
        a.shard_job,
        a.solution,
        a.workdir,
    )


def _stop_on_signal(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through Cluster.__exit__: everything is stopped


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    t0 = time.monotonic()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _stop_on_signal)
    try:
        report = run_demo(options)
    except (ServiceError, OSError, KeyboardInterrupt) as exc:
        say(f"FAILED: {exc}")
        print(
            json.dumps(
                {
                    "runs": [],
                    "workers": [],
                    "outputs": [],
                    "seconds": round(time.monotonic() - t0, 1),
                    "error": str(exc).splitlines()[0],
                }
            )
        )
        return 1
    report["seconds"] = round(time.monotonic() - t0, 1)
    for problem in report["problems"]:
        say(f"problem: {problem}")
    print(json.dumps(report))
    return 0 if not report["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
