"""Local services for ``make cluster-demo`` (tools/cluster_demo.py), each bound to 127.0.0.1
on a free port and stopped by the process id it was started with:

* ``Redis``: Debian's ``redis-server`` (installed with apt-get when absent and we are root),
  the Celery broker and result backend, without persistence;
* ``Postgres``: a throwaway PostgreSQL cluster (Debian's ``postgresql``), the Dagster
  instance storage; run as the ``postgres`` user when we are root (initdb refuses root);
* ``Process``: any other long-running command (Celery workers, the code server, the
  daemon) in its own process group with its output in a log file.

SeaweedFS (S3) comes from tests/s3server.py, which already handles weed's quirks.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from s3server import _pdeathsig_preexec  # noqa: E402  (SIGKILL children when their parent dies)

HOST = "127.0.0.1"


class ServiceError(RuntimeError):
    """A service did not start; the message names it and ends with its log's last lines."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def ensure_debian_package(binary_glob: str, package: str) -> str | None:
    """Path of the first file matching ``binary_glob``; installs ``package`` with apt-get when
    nothing matches and we may (root, apt-get present). None when still absent."""
    found = sorted(glob.glob(binary_glob), reverse=True)
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found[0] if found else None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=900)
        subprocess.run(install, env=env, capture_output=True, timeout=900)
    found = sorted(glob.glob(binary_glob), reverse=True)
    return found[0] if found else None


class Process:
    """A command in its own process group (``stop`` signals the group by the leader's pid)."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, *, cwd: Path, env: dict[str, str]):
        self.name, self.cmd, self.log_path = name, cmd, log_path
        self.signalled: int | None = None  # the signal ``terminate`` sent
        cwd.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=_pdeathsig_preexec(),  # SIGKILLed if the demo itself is killed
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise ServiceError(f"{self.name} exited with status {self.popen.returncode}:\n{log_tail(self.log_path)}")

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        """``sig`` to the process group, once, without waiting (``stop`` waits)."""
        if self.signalled is None and self.popen.poll() is None:
            self.signalled = sig
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
        """``sig`` to the process group (unless ``terminate`` sent one), SIGKILL to it after
        ``grace`` seconds. Idempotent."""
        self.terminate(sig)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=10.0)
        # children left in the group once the leader is gone (e.g. a Celery pool process)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


def wait_until(ready, process: Process, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_alive()
        if ready():
            return
        time.sleep(0.2)
    raise ServiceError(f"{what} not ready after {timeout:.0f} s:\n{log_tail(process.log_path)}")


class Redis:
    """``redis-server`` on a free local port, no snapshots or append-only file."""

    def __init__(self, base: Path):
        binary = shutil.which("redis-server") or ensure_debian_package("/usr/bin/redis-server", "redis-server")
        if binary is None:
            raise ServiceError(
                "redis-server not found and Debian's redis-server package could not be installed "
                "(needs root and apt-get)"
            )
        base.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        cmd = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(base),
            "--daemonize",
            "no",
        ]
        self.process = Process("redis-server", cmd, base / "redis.log", cwd=base, env=dict(os.environ))
        wait_until(self._pong, self.process, f"redis-server on port {self.port}", timeout=30)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _pong(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        self.process.stop()


class Postgres:
    """A fresh PostgreSQL cluster in ``base`` on a free local port, with database ``db``
    owned by ``user`` (trust authentication: it listens on 127.0.0.1 only)."""

    def __init__(self, base: Path, user: str = "dagster", db: str = "dagster"):
        bin_dir = _postgres_bin_dir()
        if bin_dir is None:
            raise ServiceError(
                "PostgreSQL server not found and Debian's postgresql package could not be installed "
                "(needs root and apt-get)"
            )
        self.user, self.db, self.port = user, db, free_port()
        base.mkdir(parents=True, exist_ok=True)
        prefix = _run_as_unprivileged(base)
        data = base / "data"
        done = subprocess.run(
            [*prefix, f"{bin_dir}/initdb", "-D", str(data), "-U", user, "-A", "trust", "-E", "UTF8", "--no-sync"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise ServiceError(f"initdb failed: {(done.stderr or done.stdout).strip()[-2000:]}")
        options = [
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]
        cmd = [*prefix, f"{bin_dir}/postgres", "-D", str(data), "-p", str(self.port), "-k", str(base), *options]
        self.process = Process("postgres", cmd, base / "server.log", cwd=base, env=dict(os.environ))
        wait_until(self._accepts, self.process, f"PostgreSQL on port {self.port}", timeout=60)
        self._create_database()

    def env(self) -> dict[str, str]:
        """The DAGSTER_PG_* variables that deploy/dagster.postgres.yaml reads."""
        return {
            "DAGSTER_PG_HOST": HOST,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": "unused-with-trust",
            "DAGSTER_PG_DB": self.db,
        }

    def _connect(self, db: str):
        import psycopg2

        return psycopg2.connect(host=HOST, port=self.port, user=self.user, dbname=db, connect_timeout=2)

    def _accepts(self) -> bool:
        try:
            self._connect("postgres").close()
            return True
        except Exception:  # psycopg2.OperationalError while the server starts
            return False

    def _create_database(self) -> None:
        conn = self._connect("postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{self.db}"')
        finally:
            conn.close()

    def stop(self) -> None:
        self.process.stop(signal.SIGINT)  # PostgreSQL's fast shutdown


def _postgres_bin_dir() -> str | None:
    def find() -> str | None:
        dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
        if shutil.which("initdb"):
            dirs.insert(0, os.path.dirname(os.path.realpath(shutil.which("initdb"))))
        return next((d for d in dirs if os.path.exists(os.path.join(d, "postgres"))), None)

    return find() or (ensure_debian_package("/usr/lib/postgresql/*/bin/postgres", "postgresql") and find())


def _run_as_unprivileged(base: Path) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as ``postgres`` (or ``nobody``)."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser"):
            os.chown(base, entry.pw_uid, entry.pw_gid)
            return ["runuser", "-u", name, "--"]
    raise ServiceError("running as root with neither a postgres nor a nobody user (or no runuser) to run PostgreSQL")
