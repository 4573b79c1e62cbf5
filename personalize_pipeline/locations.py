"""Locations: a local folder or an ``s3://`` prefix, read and written through fsspec/s3fs.

Every artifact is written atomically: to a temporary name next to its final name, then
moved into place (``os.replace`` locally). On S3 a single PUT is already all-or-nothing, so
objects are uploaded under a temporary key and copied into place, which means a reader
never sees a partial object under the final key.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import fsspec

from .errors import InputError, StorageUnavailable

if TYPE_CHECKING:
    import pandas as pd


def _int_env(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name) or default))
    except ValueError:
        raise InputError(f"{name} must be a whole number, got {os.environ[name]!r}") from None


class Unreachable(StorageUnavailable):
    """The S3 endpoint cannot be reached (down, wrong address, network): transient."""


@dataclass(frozen=True)
class S3Options:
    """How to reach S3 (or MinIO / SeaweedFS). Empty fields fall back to the standard
    AWS environment variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    AWS_REGION / AWS_DEFAULT_REGION) and then to botocore's own credential chain."""

    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)  # never in a repr or a message
    region: str | None = None

    def storage_options(self) -> dict[str, Any]:
        endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        key = self.access_key_id or os.environ.get("AWS_ACCESS_KEY_ID")
        secret = self.secret_access_key or os.environ.get("AWS_SECRET_ACCESS_KEY")
        region = self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        opts: dict[str, Any] = {
            "client_kwargs": {"region_name": region},
            "skip_instance_cache": True,
            "use_listings_cache": False,
            "config_kwargs": {
                # AWS's own variables for retries are honoured (botocore ignores them once a
                # retries config is given)
                "retries": {
                    "max_attempts": _int_env("AWS_MAX_ATTEMPTS", 3),
                    "mode": os.environ.get("AWS_RETRY_MODE") or "standard",
                },
                "connect_timeout": 5,
                "read_timeout": 60,
            },
        }
        if endpoint:
            opts["client_kwargs"]["endpoint_url"] = endpoint
        if key and secret:
            opts["key"], opts["secret"] = key, secret
        return opts

    def endpoint(self) -> str:
        """The endpoint requests go to, for messages."""
        return self.storage_options()["client_kwargs"].get("endpoint_url") or "(AWS default)"

    def redact(self, text: str) -> str:
        """Remove credentials from a message before it is shown anywhere."""
        for secret in (self.secret_access_key, os.environ.get("AWS_SECRET_ACCESS_KEY")):
            if secret and len(secret) >= 4:  # (a one-letter test secret would blank out every "s")
                text = text.replace(secret, "***")
        return text


@dataclass(frozen=True)
class Location:
    """A folder-like place: ``/abs/path``, ``relative/path`` or ``s3://bucket/prefix``."""

    url: str
    s3: S3Options = field(default_factory=S3Options)

    def __post_init__(self):
        if not self.url or not self.url.strip():
            raise InputError("empty location: give a folder path or an s3://bucket/prefix")
        if "\0" in self.url:
            raise InputError(f"{self.url!r}: a location cannot contain a NUL character")
        scheme = self.url.split("://", 1)[0].lower() if "://" in self.url else ""
        if scheme in ("s3", "s3a"):
            bucket = self.url.split("://", 1)[1].split("/", 1)[0]
            if not bucket:
                raise InputError(f"{self.url}: an S3 location needs a bucket name (s3://bucket/prefix)")
            url = self.url.rstrip("/")
        elif scheme == "file":
            url = os.path.abspath(os.path.expanduser(self.url.split("://", 1)[1]))
        elif scheme:
            raise InputError(
                f"{self.url}: unsupported location scheme {scheme}:// (use a folder path or s3://bucket/prefix)"
            )
        else:
            url = os.path.abspath(os.path.expanduser(self.url))
        object.__setattr__(self, "url", url)

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://") or self.url.startswith("s3a://")

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self.is_s3:
            return _s3_filesystem(json.dumps(self.s3.storage_options(), sort_keys=True), os.getpid())
        return fsspec.filesystem("file")

    @property
    def path(self) -> str:
        """The path as the filesystem sees it (no scheme for S3)."""
        if self.is_s3:
            return self.url.split("://", 1)[1]
        return self.url

    @property
    def name(self) -> str:
        return posixpath.basename(self.url.rstrip("/"))

    def child(self, *parts: str) -> Location:
        """A location under this one. Parts come from names users give (solution names,
        batch input file names): one that is empty, absolute, or steps out with ``..`` is
        refused, so nothing can be written outside the configured root."""
        for part in parts:
            steps = str(part).replace("\\", "/").split("/")
            if (
                not str(part).strip()
                or str(part).startswith("/")
                or ".." in steps
                or "\0" in str(part)
                or all(p in ("", ".") for p in steps)
            ):
                raise InputError(f"path component {part!r} would leave {self.url}")
        return Location(posixpath.join(self.url, *parts) if self.is_s3 else os.path.join(self.url, *parts), self.s3)

    def parent(self) -> Location:
        return Location(posixpath.dirname(self.url) if self.is_s3 else os.path.dirname(self.url), self.s3)

    def __str__(self) -> str:
        return self.url

    # --- reading -------------------------------------------------------------------
    def exists(self) -> bool:
        with s3_errors(self):
            return self.fs.exists(self.path)

    def is_dir(self) -> bool:
        with s3_errors(self):
            return self.fs.isdir(self.path)

    def listdir(self) -> list[str]:
        with s3_errors(self):
            if not self.fs.isdir(self.path):
                return []
            return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self.path, detail=False))

    def size(self) -> int:
        with s3_errors(self):
            return int(self.fs.size(self.path))

    def signature(self) -> str:
        """A cheap change token for a file from its listing, without reading it: size and
        ETag on S3, size and modification time locally."""
        with s3_errors(self):
            return _signature(self.fs.info(self.path))

    def files(self) -> dict[str, str]:
        """``{relative path: signature}`` of every file under this folder, at any depth, from
        one recursive listing (empty when the folder does not exist)."""
        with s3_errors(self):
            if not self.fs.isdir(self.path):
                return {}
            found = self.fs.find(self.path, detail=True)
        root = self.path.rstrip("/")
        out = {}
        for path, info in found.items():
            if info.get("type") == "directory":
                continue
            out[posixpath.relpath(path.replace(os.sep, "/"), root.replace(os.sep, "/"))] = _signature(info)
        return dict(sorted(out.items()))

    def read_bytes(self) -> bytes:
        with s3_errors(self):
            with self.fs.open(self.path, "rb") as fh:
                return fh.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def read_json(self) -> Any:
        try:
            return json.loads(self.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{self.url}: not valid JSON ({exc})") from None

    def read_parquet(self) -> pd.DataFrame:
        """A Parquet file written by :meth:`write_parquet`; list columns stay Arrow lists."""
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self.open("rb") as fh:
            table = pq.read_table(fh)
        return table.to_pandas(types_mapper=lambda t: pd.ArrowDtype(t) if pa.types.is_list(t) else None)

    @contextlib.contextmanager
    def open(self, mode: str = "rb") -> Iterator[Any]:
        with s3_errors(self):
            # local files through the plain built-in open: it also reads pipes and FIFOs
            # (``--input /dev/stdin``), where fsspec's local opener would try to seek
            with self.fs.open(self.path, mode) if self.is_s3 else builtins.open(self.path, mode) as fh:
                yield fh

    # --- writing (always atomic) -------------------------------------------------------
    def makedirs(self) -> None:
        with s3_errors(self):
            if self.is_s3:
                bucket = self.path.split("/", 1)[0]
                if not self.fs.exists(bucket):
                    raise InputError(f"{self.url}: bucket {bucket!r} does not exist")
            else:
                try:
                    os.makedirs(self.path, exist_ok=True)
                except (NotADirectoryError, FileExistsError):
                    raise InputError(
                        f"{self.url}: cannot create folder: part of the path is a file, not a folder"
                    ) from None
                except OSError as exc:
                    raise InputError(f"{self.url}: cannot create folder ({exc.strerror or exc})") from None

    def write_bytes(self, data: bytes) -> None:
        """Atomically replace this file with ``data``."""
        with self.atomic_writer() as fh:
            fh.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def write_json(self, obj: Any) -> None:
        self.write_bytes((json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode("utf-8"))

    def write_parquet(self, frame: pd.DataFrame) -> None:
        """Atomically replace this file with ``frame`` as zstd-compressed Parquet (no index)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        with self.atomic_writer() as fh:
            pq.write_table(table, fh, compression="zstd")

    @contextlib.contextmanager
    def atomic_writer(self) -> Iterator[BinaryIO]:
        """Yield a binary file handle; on success the content appears under this name at
        once, on failure nothing changes under this name."""
        self.parent().makedirs()
        tmp = self.parent().child(f".{self.name}.tmp-{uuid.uuid4().hex[:12]}")
        try:
            if self.is_s3:
                with s3_errors(self):
                    with tmp.fs.open(tmp.path, "wb") as fh:
                        yield fh
                    fs = self.fs
                    fs.copy(tmp.path, self.path)
                    fs.rm(tmp.path)
            else:
                try:
                    with open(tmp.path, "wb") as fh:
                        yield fh
                        fh.flush()
                        os.fsync(fh.fileno())
                    os.replace(tmp.path, self.path)
                except OSError as exc:
                    raise InputError(f"{self.url}: cannot write ({exc.strerror or exc})") from None
        except BaseException as exc:
            if not isinstance(exc, Unreachable):  # (when the endpoint is gone, so is the upload)
                with contextlib.suppress(Exception):
                    if tmp.exists():
                        tmp.fs.rm(tmp.path)
            raise

    def remove(self, recursive: bool = False) -> None:
        with s3_errors(self):
            if self.fs.exists(self.path):
                self.fs.rm(self.path, recursive=recursive)


def _signature(info: dict[str, Any]) -> str:
    version = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") or ""
    return f"{int(info.get('size') or 0)}:{str(version).strip(chr(34))}"


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def s3_errors(location: Location) -> Iterator[None]:
    """Turn storage exceptions into one-line InputErrors naming the location."""
    try:
        yield
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{location.url}: not found") from None
    except PermissionError as exc:
        msg = (str(exc) or "access denied").splitlines()[0]
        if location.is_s3:  # s3fs turns InvalidAccessKeyId / SignatureDoesNotMatch / AccessDenied into this
            msg = f"the S3 endpoint {location.s3.endpoint()} rejected the credentials or denied access ({msg})"
            raise InputError(location.s3.redact(f"{location.url}: {msg}")) from None
        raise InputError(f"{location.url}: access denied ({exc.strerror or msg})") from None
    except IsADirectoryError:
        raise InputError(f"{location.url}: is a folder, not a file") from None
    except NotADirectoryError:
        raise InputError(f"{location.url}: a parent of this path is a file, not a folder") from None
    except Exception as exc:  # botocore / aiohttp errors have many types; classify by name
        name = type(exc).__name__
        text = " ".join(str(exc).split())[:300] or name
        if not location.is_s3:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise InputError(f"{location.url}: {exc.strerror or text}") from None
            raise
        endpoint = location.s3.endpoint()
        if "Endpoint" in name or "Connect" in name or "ClientConnector" in name or "connect" in text.lower():
            raise Unreachable(
                location.s3.redact(f"{location.url}: cannot reach the S3 endpoint {endpoint} ({text})")
            ) from None
        if (
            "InvalidAccessKeyId" in text
            or "SignatureDoesNotMatch" in text
            or "AccessDenied" in text
            or "Forbidden" in text
        ):
            raise InputError(
                location.s3.redact(f"{location.url}: the S3 endpoint {endpoint} rejected the credentials ({text})")
            ) from None
        if "NoCredentials" in name:
            raise InputError(
                f"{location.url}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or configure "
                "them)"
            ) from None
        if "NoSuchBucket" in text:
            raise InputError(f"{location.url}: bucket does not exist") from None
        raise StorageUnavailable(location.s3.redact(f"{location.url}: S3 error {name}: {text}")) from None


@functools.lru_cache(maxsize=32)
def _s3_filesystem(options: str, pid: int) -> fsspec.AbstractFileSystem:
    """One S3 filesystem (one connection pool) per set of options and process: creating a
    client is slow, and every small read and write used to pay for it. Listings are
    never cached (``use_listings_cache=False``), so every call still sees the bucket as it is."""
    return fsspec.filesystem("s3", **json.loads(options))


def as_location(value: str | os.PathLike | Location, s3: S3Options | None = None) -> Location:
    if isinstance(value, Location):
        return value
    return Location(os.fspath(value), s3 or S3Options())
