"""The Postgres instance (deploy/dagster.postgres.yaml, dagster-postgres) against a real
PostgreSQL server started by the test: the popularity pipeline runs through it and its
runs, materializations and check results are stored in Postgres.

The server comes from Debian's ``postgresql`` package (installed with apt-get when absent
and the test runs as root); the test is skipped, saying why, only where that is impossible."""

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import dagster as dg
import pytest
from pipeline_resources import pipeline_defs

ROOT = Path(__file__).resolve().parents[2]


def _bin_dir() -> str | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    if shutil.which("initdb"):
        candidates.insert(0, os.path.dirname(os.path.realpath(shutil.which("initdb"))))
    return next((c for c in candidates if os.path.exists(os.path.join(c, "pg_ctl"))), None)


def _install_postgres() -> str:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "not root or no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"],
    ):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"{' '.join(cmd)} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """(host, port, user, db) of a throwaway PostgreSQL server; stopped and removed afterwards."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        why = _install_postgres()
        bin_dir = _bin_dir()
        if bin_dir is None:
            pytest.skip(
                f"PostgreSQL server binaries not found and the postgresql package could not be installed ({why})"
            )
    # initdb refuses to run as root: run the server as the package's postgres user (or nobody)
    prefix: list[str] = []
    base = tempfile.mkdtemp(prefix="pgtest-")
    if os.geteuid() == 0:
        user = next((u for u in ("postgres", "nobody") if _user_exists(u)), None)
        if user is None or not shutil.which("runuser"):
            pytest.skip("running as root with neither a postgres nor a nobody user (or no runuser) to run PostgreSQL")
        prefix = ["runuser", "-u", user, "--"]
        entry = pwd.getpwnam(user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    data, port = os.path.join(base, "data"), _free_port()

    def run(*cmd):
        return subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True, timeout=120)

    run(f"{bin_dir}/initdb", "-D", data, "-U", "dagster", "-A", "trust", "-E", "UTF8", "--no-sync")
    options = (
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c "
        "full_page_writes=off"
    )
    run(
        f"{bin_dir}/pg_ctl",
        "-D",
        data,
        "-o",
        options,
        "-l",
        os.path.join(base, "server.log"),
        "-w",
        "-t",
        "60",
        "start",
    )
    try:
        run(f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "dagster", "dagster_test")
        yield "127.0.0.1", port, "dagster", "dagster_test"
    finally:
        subprocess.run(
            [*prefix, f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True, timeout=60
        )
        shutil.rmtree(base, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_pipeline_runs_through_a_postgres_instance(postgres, demo_small, tmp_path, monkeypatch):
    import psycopg2

    host, port, user, db = postgres
    for key, value in {
        "HOST": host,
        "PORT": str(port),
        "USER": user,
        "PASSWORD": "unused-with-trust",
        "DB": db,
    }.items():
        monkeypatch.setenv(f"DAGSTER_PG_{key}", value)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.postgres.yaml", home / "dagster.yaml")

    defs = pipeline_defs(demo_small, tmp_path / "a", tmp_path / "o")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        result = defs.resolve_job_def("demo__full_retrain").execute_in_process(instance=instance, raise_on_error=False)
        assert result.success
        assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
        md = instance.get_latest_materialization_event(
            dg.AssetKey(["demo", "batch_inference_output"])
        ).asset_materialization.metadata
        latest = json.loads((tmp_path / "o" / "demo" / "latest.json").read_text())
        assert latest["run_id"] == result.run_id and latest["output"] == md["path"].value

    with psycopg2.connect(host=host, port=port, user=user, dbname=db) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE run_id = %s AND status = 'SUCCESS'", (result.run_id,))
        assert cur.fetchone()[0] == 1
        cur.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
            (result.run_id,),
        )
        assert cur.fetchone()[0] == 7  # validated x3, featurized, solution version, metrics, batch output
