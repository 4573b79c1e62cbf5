"""``make cluster-demo``: the pipeline on a real, if local, cluster.

Starts, on 127.0.0.1 only: SeaweedFS as S3 (dataset, artifacts, outputs; credentials
required), Redis as the Celery broker and result backend, PostgreSQL as the Dagster instance
storage (deploy/dagster.postgres.yaml), the code location as a gRPC server, the Dagster daemon
(run queue, sensors) and two Celery workers (``dagster-celery worker start``, deploy/celery.yaml)
each in its own working directory, as on separate machines, all importing this checkout
(PYTHONPATH). The pipeline's configuration is deploy/personalize.celery.yaml with the S3
locations filled in and one of its solutions (``--solution``, default the first).

Then, through the instance: the FULL retrain job with the Celery executor on the demo dataset
in S3; then the batch job over N input shards, whose partitions and runs the shard sensor
creates, all running at once. It checks that every run succeeded, that at least two workers
executed steps, that every recorded artifact and output is on S3 (and the ``.out`` files are
there) and that nothing was written into the processes' working directories; stops everything
it started, by process id; and prints one JSON line last:
``{"runs": [...], "workers": [...], "outputs": [...], "seconds": ...}``. Exit 0 only when all
runs succeeded and the checks hold.

    .venv/bin/python tools/cluster_demo.py [--recipe aws-hrnn] [--shards 4] [--interactions 60000 ...]

The jobs are the solution's (``<solution>__full_retrain``, ``<solution>__batch_jobs``, sensor
``<solution>__batch_job_shards``; ``--full-job`` / ``--shard-job`` name others);
tests/dagster/test_cluster_demo.py runs the same at a small scale.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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
sys.path.insert(0, str(ROOT))  # this checkout's personalize_pipeline, as the services get it (PYTHONPATH)
sys.path.insert(0, str(ROOT / "tests"))  # SeaweedS3: the project's SeaweedFS launcher
sys.path.insert(0, str(ROOT / "tools"))

from cluster_services import HOST, Postgres, Process, Redis, ServiceError, free_port, log_tail, wait_until  # noqa: E402
from s3server import SeaweedS3  # noqa: E402

# Job and sensor names of a solution (assets/solutions.py); the CLI says so when one is missing
FULL_JOB = "{solution}__full_retrain"
SHARD_JOB = "{solution}__batch_jobs"
SHARD_SENSOR = "{solution}__batch_job_shards"
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
    solution: str | None = None  # which solution of deploy/personalize.celery.yaml (default: the first)
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
        for process in self.processes.values():  # all at once; the stack then waits for each
            process.terminate()
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

    def wait_code_server(self) -> None:
        """The code server serving, then the daemon started. (The demo uploads its data while
        the code server and the workers import the code location.)"""
        wait_until(
            self._code_server_serving, self.processes["code-server"], "the code location's gRPC server", timeout=300
        )
        daemon = self._spawn("daemon", ["dagster-daemon", "run", "-w", str(self.work / "workspace.yaml")])
        say(f"code server serving (pid {self.processes['code-server'].pid}), daemon started (pid {daemon.pid})")

    def wait_workers(self) -> None:
        """Both Celery workers connected to the broker (steps sent earlier wait there)."""
        for name in WORKERS:
            wait_until(
                lambda n=name: " ready." in log_tail(self.work / "logs" / f"{n}.log", 200),
                self.processes[name],
                f"Celery {name}",
                300,
            )
        say(f"Celery workers {', '.join(WORKERS)} ready")

    def _environment(self) -> dict[str, str]:
        w = self.work
        home = w / "dagster_home"
        home.mkdir()
        shutil.copy(ROOT / "deploy" / "dagster.postgres.yaml", home / "dagster.yaml")
        config = personalize_config(self.options.recipe, self.options.solution)
        self.solution = config["solutions"][0]["name"]
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
            # the services import this tree, not whatever an editable install points at
            "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
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
            detail = (done.stderr or done.stdout).strip() or "no output"
            # the last line says why (click's "Error: ..."), first in the report; then the rest
            raise ServiceError(f"`dagster {' '.join(args)}` failed: {detail.splitlines()[-1]}\n{detail[-1500:]}")
        return done.stdout

    def check_alive(self) -> None:
        for process in self.processes.values():
            process.check_alive()


def personalize_config(recipe: str, solution: str | None = None) -> dict:
    """deploy/personalize.celery.yaml with the demo's S3 locations, and of its ``solutions``
    only ``solution`` (default: the first), with the demo's recipe; checked against the
    pipeline's configuration model here, so that a file the workers would refuse stops the
    demo with one line naming the key."""
    import yaml

    from personalize_pipeline.config import parse_config
    from personalize_pipeline.errors import InputError

    source = ROOT / "deploy" / "personalize.celery.yaml"
    config = yaml.safe_load(source.read_text()) or {}
    try:
        solutions = parse_config(config, str(source)).solutions
    except InputError as exc:
        raise ServiceError(exc.message) from None
    names = [s.name for s in solutions]
    if solution is not None and solution not in names:
        raise ServiceError(f"--solution {solution}: not in {source} (it has {', '.join(names)})")
    raw = config.get("solutions") or [{"name": names[0]}]  # absent: the model's default solution
    config["solutions"] = [{**raw[names.index(solution or names[0])], "recipe": recipe}]
    config["locations"] = {k: f"s3://{BUCKET}/{k.replace('_', '-')}" for k in LOCATION_VARIABLES}
    try:
        parse_config(config, f"{source} with the demo's solution and locations")
    except InputError as exc:
        raise ServiceError(exc.message) from None
    return config


def upload_demo_data(cluster: Cluster, options: DemoOptions) -> None:
    """The demo dataset group to s3://BUCKET/dataset/; its batch job input, split into
    ``options.shards`` shards, to s3://BUCKET/batch-input/<solution>/part-K.jsonl."""
    from personalize_pipeline.demo_data import DemoSpec, generate

    local = cluster.work / "demo-data"
    generate(local, DemoSpec(users=options.users, items=options.items, interactions=options.interactions))
    fs = cluster.s3.filesystem()
    for path in sorted(local.rglob("*")):
        if path.is_file() and path.parts[len(local.parts)] != "batch-input":
            fs.put_file(str(path), f"{BUCKET}/dataset/{path.relative_to(local).as_posix()}")
    lines = (local / "batch-input" / "users.jsonl").read_text().splitlines(keepends=True)
    for k in range(options.shards):
        shard = "".join(lines[k :: options.shards]).encode()
        fs.pipe_file(f"{BUCKET}/batch-input/{cluster.solution}/part-{k}.jsonl", shard)
    shutil.rmtree(local)
    say(
        f"demo dataset ({options.interactions:,} interactions) and {options.shards} batch input shards uploaded to s3://{BUCKET}/"
    )


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
            daemon_log = log_tail(cluster.work / "logs" / "daemon.log")
            raise ServiceError(f"{job}: runs not finished in time ({states}); daemon log:\n{daemon_log}")
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
        cluster.wait_code_server()
        full_job = options.full_job or FULL_JOB.format(solution=cluster.solution)
        shard_job = options.shard_job or SHARD_JOB.format(solution=cluster.solution)
        sensor = SHARD_SENSOR.format(solution=cluster.solution)
        with dg.DagsterInstance.get() as instance:
            say(f"launching {full_job} (Celery executor) through the instance")
            cluster.dagster("job", "launch", "-j", full_job)
            cluster.wait_workers()  # while the daemon dequeues the run and its run worker starts
            runs = wait_for_runs(cluster, instance, full_job, 1, deadline)
            say(f"{full_job}: {runs[0].status.value}")
            if runs[0].status.value == "SUCCESS":
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
    inputs = sum(len(fs.cat_file(p).splitlines()) for p in fs.glob(f"{BUCKET}/batch-input/{cluster.solution}/*.jsonl"))
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
    p.add_argument("--full-job", help=f"the FULL retrain job (default: {FULL_JOB})")
    p.add_argument("--shard-job", help=f"the sharded batch job (default: {SHARD_JOB})")
    p.add_argument("--solution", help="which solution of deploy/personalize.celery.yaml (default: the first)")
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
