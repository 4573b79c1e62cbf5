"""Reading a Personalize dataset group from a folder or an ``s3://`` prefix.

Layout: ``interactions.{csv,csv.gz,parquet}`` (required), optional ``items.*`` and
``users.*``, optional ``schemas/{interactions,items,users}.json``; each dataset may instead
be a folder of such files (``interactions/``, also with ``key=value/`` partition folders,
see ``imports.py``), read in sorted path order as one dataset whose ``parts`` are the
files (validation names the file and line of each problem). Every column is read as a
string first (ids such as ``-2996180203100007228`` stay exact, and type problems are
reported by validation with row counts instead of a parser crash); ``typed()`` converts
the columns to their schema types afterwards.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import tempfile
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import InputError
from .imports import DataFile, list_files
from .locations import Location, S3Options, as_location
from .schemas import DATASET_TYPES, INTEGER_TYPES, NUMERIC_TYPES, Schema, infer_schema, parse_avro

SLICE_ROWS = 1_000_000  # rows per slice when a dataset is streamed
STREAM_BYTES = 256 << 20  # CSV files larger than this are streamed, not held in memory
STREAM_ROWS = 2_000_000  # snapshots (Parquet) with more rows than this are streamed
CSV_BLOCK_BYTES = (
    1 << 22
)  # Arrow's CSV parse block: the unit a streamed CSV is read in (the streaming reader keeps several in flight)


@dataclass
class Dataset:
    """One dataset (interactions, items or users): string columns plus its schema.

    Small files are held as one Arrow table. A large one is *streamed*: ``stream`` reads
    it in slices each time it is called (a large CSV from the spill file of its one parse,
    see ``read_dataset``) and ``table`` is only built if something asks for the whole
    table; ``slices()`` serves both (validation and featurization use it, so their memory
    does not grow with the file)."""

    dataset_type: str
    data: pa.Table | None  # every column pa.string(); None while streamed (see ``stream``)
    schema: Schema
    source: str  # file url, for messages
    fingerprint: str = ""  # sha256 of the file bytes (first 16 hex digits)
    signature: str = ""  # size and ETag / mtime of the file when read (Location.signature)
    stream: Callable[[int], Iterator[pa.Table]] | None = field(default=None, repr=False)
    rows: int = 0  # row count of a streamed dataset
    columns: list[str] = field(default_factory=list)  # column names of a streamed dataset
    parts: list[Dataset] = field(default_factory=list, repr=False)  # one per file when read from several
    path: str = ""  # the file's path relative to the dataset group (one file)

    def files(self) -> list[Dataset]:
        """The datasets of the single files this one was read from (itself for one file)."""
        return self.parts or [self]

    recorded_imports: list[dict[str, Any]] | None = field(default=None, repr=False)  # a snapshot's record of its files

    def imports(self) -> list[dict[str, Any]]:
        """What a solution version records of each file: path, fingerprint, signature, rows."""
        if self.recorded_imports is not None:
            return list(self.recorded_imports)
        if self.parts:
            return [record for d in self.parts for record in d.imports()]
        return [
            {"path": self.path, "fingerprint": self.fingerprint, "signature": self.signature, "rows": self.num_rows}
        ]

    def __post_init__(self):
        if self.data is None and self.stream is None:
            raise ValueError("a Dataset needs a table or a stream")

    @property
    def table(self) -> pa.Table:
        """The whole table (a streamed dataset is read into memory on first use)."""
        if self.data is None:
            self.data = pa.concat_tables(self._read(SLICE_ROWS))
        return self.data

    def _read(self, rows: int) -> Iterator[pa.Table]:
        """A streamed dataset's file, ``rows`` at a time."""
        if self.stream is None:
            raise ValueError("a Dataset needs a table or a stream")
        return self.stream(rows)

    @property
    def streamed(self) -> bool:
        return self.data is None

    @property
    def num_rows(self) -> int:
        return self.rows if self.data is None else self.data.num_rows

    @property
    def column_names(self) -> list[str]:
        return list(self.columns) if self.data is None else self.data.column_names

    def slices(self, rows: int | None = None) -> Iterator[pa.Table]:
        """The rows in order, ``rows`` at a time (the last slice shorter)."""
        size = rows or SLICE_ROWS
        if self.data is not None:
            for offset in range(0, self.data.num_rows, size):
                yield self.data.slice(offset, size)
            return
        yield from self._read(size)

    def frame(self, max_rows: int | None = None) -> pd.DataFrame:
        """The rows as pandas (only the first ``max_rows`` when given)."""
        if max_rows is not None and self.num_rows > max_rows:
            return next(iter(self.slices(max_rows))).slice(0, max_rows).to_pandas()
        return self.table.to_pandas()

    def typed(self, max_rows: int | None = None) -> pd.DataFrame:
        """Columns converted to their schema types (invalid values become missing)."""
        df = self.frame(max_rows)
        for f in self.schema.fields:
            if f.name not in df.columns:
                continue
            if f.type in NUMERIC_TYPES:
                values = pd.to_numeric(df[f.name], errors="coerce")
                if f.type in INTEGER_TYPES and not values.isna().any():
                    values = values.astype("int64")
                df[f.name] = values
            elif f.type == "boolean":
                df[f.name] = df[f.name].str.lower().map({"true": True, "false": False, "1": True, "0": False})
        return df


@dataclass
class DatasetFiles:
    """Datasets read from some files of a dataset group, any of them absent (an increment's new files)."""

    location: str
    interactions: Dataset | None = None
    items: Dataset | None = None
    users: Dataset | None = None
    files: dict[str, str] = field(default_factory=dict)

    def datasets(self) -> list[Dataset]:
        return [d for d in (self.interactions, self.items, self.users) if d is not None]

    def get(self, dataset_type: str) -> Dataset | None:
        return getattr(self, dataset_type)


@dataclass
class DatasetGroup(DatasetFiles):
    """A whole dataset group: interactions, and items and users when it has them."""

    interactions: Dataset


def _group_root(location: str | Location, s3: S3Options | None = None) -> Location:
    root = as_location(location, s3)
    if not root.is_dir():
        if root.exists():
            raise InputError(f"{root.url}: is a file; give the dataset group folder that holds interactions.csv")
        raise InputError(f"{root.url}: dataset location does not exist")
    return root


def _schema_doc(root: Location, dataset_type: str) -> tuple[Any, str]:
    schema_file = root.child("schemas", f"{dataset_type}.json")
    return (schema_file.read_json() if schema_file.exists() else None), schema_file.url


def read_files(root: Location, dataset_type: str, files: list[DataFile]) -> Dataset | None:
    """The dataset made of ``files`` (in order) of the group at ``root``; None for none."""
    if not files:
        return None
    schema_doc, schema_source = _schema_doc(root, dataset_type)
    parts = []
    for f in files:
        part = read_dataset(f.location(root), dataset_type, schema_doc, schema_source=schema_source)
        part.path = f.path
        parts.append(part)
    return parts[0] if len(parts) == 1 else combine_parts(parts, root.child(dataset_type).url)


def read_one(
    location: str | Location, dataset_type: str, s3: S3Options | None = None, files: list[DataFile] | None = None
) -> Dataset | None:
    """One dataset of a group (None when an optional dataset is absent)."""
    if dataset_type == "interactions":
        return read_interactions(location, s3, files)
    root = _group_root(location, s3)
    found = list_files(root)[dataset_type] if files is None else files
    return read_files(root, dataset_type, found)


def read_interactions(
    location: str | Location, s3: S3Options | None = None, files: list[DataFile] | None = None
) -> Dataset:
    """The interactions dataset of a group, which every group has."""
    root = _group_root(location, s3)
    dataset = read_files(root, "interactions", list_files(root)["interactions"] if files is None else files)
    if dataset is None:
        raise InputError(
            f"{root.url}: no interactions.csv, interactions.csv.gz, interactions.parquet or interactions/ folder of "
            "such files found"
        )
    return dataset


def read_dataset_group(location: str | Location, s3: S3Options | None = None) -> DatasetGroup:
    root = _group_root(location, s3)
    listed = list_files(root)
    interactions = read_interactions(root, files=listed["interactions"])
    items, users = (read_files(root, t, listed[t]) for t in ("items", "users"))
    files = {t: d.source for t, d in zip(DATASET_TYPES, (interactions, items, users), strict=True) if d is not None}
    return DatasetGroup(root.url, interactions, items, users, files)


def _numeric_in(dataset: Dataset, name: str) -> bool:
    declared = dataset.schema.field(name)
    return declared is not None and declared.is_numeric


def combine_parts(parts: list[Dataset], source: str) -> Dataset:
    """One dataset over several files with the same columns (in the first file's order).
    Without a schema file a column is numeric when it is numeric in every file."""
    first = parts[0]
    names = first.column_names
    for part in parts[1:]:
        if set(part.column_names) != set(names):
            raise InputError(
                f"{part.source}: columns {', '.join(part.column_names)} differ from {first.source} "
                f"({', '.join(names)}); "
                "every file of a dataset has the same columns"
            )
    if first.schema.from_file:
        schema = first.schema
    else:
        numeric = [n for n in names if all(_numeric_in(p, n) for p in parts)]
        schema = infer_schema(first.dataset_type, names, numeric)
    fingerprint = hashlib.sha256("".join(p.fingerprint for p in parts).encode()).hexdigest()[:16]
    signature = hashlib.sha256("".join(p.signature for p in parts).encode()).hexdigest()[:16]
    rows = sum(p.num_rows for p in parts)
    if any(p.streamed for p in parts):

        def stream(size: int) -> Iterator[pa.Table]:
            for part in parts:
                for piece in part.slices(size):
                    yield piece.select(names)

        return Dataset(
            first.dataset_type,
            None,
            schema,
            source,
            fingerprint,
            signature,
            stream=stream,
            rows=rows,
            columns=list(names),
            parts=parts,
        )
    table = pa.concat_tables([p.table.select(names) for p in parts])
    return Dataset(first.dataset_type, table, schema, source, fingerprint, signature, parts=parts)


def save_snapshot(dataset: Dataset, location: str | Location) -> Location:
    """Persist a dataset as read (string columns + schema) to a folder, atomically per file."""
    loc = as_location(location)
    loc.makedirs()
    with loc.child("data.parquet").atomic_writer() as fh:
        if dataset.streamed:
            writer = None
            for part in dataset.slices():
                writer = writer or pq.ParquetWriter(fh, part.schema, compression="zstd")
                writer.write_table(part)
            if writer is None:
                raise ValueError(f"{dataset.source}: a streamed dataset without rows")
            writer.close()
        else:
            pq.write_table(dataset.table, fh, compression="zstd")
    loc.child("dataset.json").write_json(
        {
            "dataset_type": dataset.dataset_type,
            "source": dataset.source,
            "fingerprint": dataset.fingerprint,
            "signature": dataset.signature,
            "schema": dataset.schema.to_avro(),
            "schema_from_file": dataset.schema.from_file,
            "path": dataset.path,
            "imports": dataset.imports(),
        }
    )
    return loc


def load_snapshot(location: str | Location) -> Dataset:
    loc = as_location(location)
    meta = loc.child("dataset.json").read_json()
    data = loc.child("data.parquet")
    with data.open("rb") as fh:
        parquet = pq.ParquetFile(fh)
        rows, columns = parquet.metadata.num_rows, parquet.schema_arrow.names
        table = parquet.read() if rows <= STREAM_ROWS else None
    schema = parse_avro(meta["dataset_type"], meta["schema"], loc.url)
    if not meta.get("schema_from_file"):
        schema = Schema(schema.dataset_type, schema.fields, from_file=False)
    stream = None if table is not None else _parquet_slices(data)
    dataset = Dataset(
        meta["dataset_type"],
        table,
        schema,
        meta["source"],
        meta.get("fingerprint", ""),
        meta.get("signature", ""),
        stream=stream,
        rows=rows,
        columns=columns,
    )
    dataset.path = meta.get("path", "")
    dataset.recorded_imports = meta.get("imports")
    return dataset


def _parquet_slices(data: Location) -> Callable[[int], Iterator[pa.Table]]:
    def slices(rows: int) -> Iterator[pa.Table]:
        with data.open("rb") as fh:
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=rows):
                yield pa.Table.from_batches([batch])

    return slices


def read_dataset(file: Location, dataset_type: str, schema_doc=None, schema_source: str = "") -> Dataset:
    """A small file is read into one table; a CSV file larger than ``STREAM_BYTES`` is
    parsed once (hash, row count, parse errors, numeric columns) into a spill file of Arrow
    record batches, removed with the dataset, and streamed from there."""
    signature = file.signature()  # before reading: a file replaced meanwhile looks changed next time
    if file.url.endswith(".csv") and _size(signature) > STREAM_BYTES:
        scanned = _scan_csv(file, infer_numeric=schema_doc is None)
        if scanned is not None:
            header, rows, fingerprint, numeric, spill = scanned
            try:
                schema = (
                    parse_avro(dataset_type, schema_doc, schema_source)
                    if schema_doc is not None
                    else infer_schema(dataset_type, header, numeric)
                )
            except BaseException:
                _remove(spill)
                raise
            dataset = Dataset(
                dataset_type,
                None,
                schema,
                file.url,
                fingerprint,
                signature,
                stream=_spill_slices(spill),
                rows=rows,
                columns=header,
            )
            weakref.finalize(dataset, _remove, spill)  # also at exit
            return dataset
    table, fingerprint = read_table(file)
    if schema_doc is not None:
        schema = parse_avro(dataset_type, schema_doc, schema_source)
    else:
        numeric = [c for c in table.column_names if _all_numeric(table.column(c))]
        schema = infer_schema(dataset_type, table.column_names, numeric)
    return Dataset(dataset_type, table, schema, file.url, fingerprint, signature)


def read_table(file: Location) -> tuple[pa.Table, str]:
    """Read a CSV (optionally gzip) or Parquet file with every column as a string.

    Returns the table and a fingerprint of the file's bytes. A plain CSV streams from the
    file into Arrow in blocks (hashed on the way), without a copy of the whole file in
    memory; when Arrow rejects it, the bytes are read again to say where and why."""
    if file.url.endswith(".csv"):
        streamed = _stream_csv(file)
        if streamed is not None:
            return streamed
    data = file.read_bytes()
    fingerprint = hashlib.sha256(data).hexdigest()[:16]
    return _parse_table(file, data), fingerprint


class _HashingReader(io.RawIOBase):
    """A read-only stream over ``fh`` that hashes every byte read, after ``prefix``
    (bytes already read from ``fh`` and hashed)."""

    def __init__(self, fh, prefix: bytes, digest):
        self._fh, self._prefix, self._digest = fh, prefix, digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._fh.read(len(view))
        self._digest.update(data)
        view[: len(data)] = data
        return len(data)


STREAM_PREFIX = 1 << 20  # bytes read up front to check the header line


def _size(signature: str) -> int:
    try:
        return int(signature.split(":", 1)[0])
    except ValueError:
        return 0


def _csv_options(header: list[str]) -> dict:
    return {
        "read_options": pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
        "parse_options": pacsv.ParseOptions(newlines_in_values=False),
        "convert_options": pacsv.ConvertOptions(
            column_types={name: pa.string() for name in header}, strings_can_be_null=True, null_values=[""]
        ),
    }


def _scan_csv(file: Location, infer_numeric: bool = True) -> tuple[list[str], int, str, list[str], str] | None:
    """The one parse of a large CSV file: (header, rows, fingerprint, columns whose values
    all parse as numbers when ``infer_numeric``, spill file), or None when the file needs
    the careful path. The parsed rows (blanks already missing) go to the spill file, an
    uncompressed Arrow IPC stream in the temporary folder, which validation and
    featurization then read back in slices instead of parsing the CSV again."""
    digest = hashlib.sha256()
    with file.open("rb") as fh:
        header = _checked_header(file, fh, digest)
        if header is None:
            return None
        numeric: dict[str, bool | None] = {name: None for name in header}  # None: no value yet; False: not numeric
        rows = 0
        spill_fd, spill = tempfile.mkstemp(prefix="personalize-parsed-", suffix=".arrows")
        os.close(spill_fd)
        try:
            reader = pacsv.open_csv(
                io.BufferedReader(_HashingReader(fh, header.prefix, digest), buffer_size=1 << 22),
                **_csv_options(header),
            )
            if reader.schema.names != header:
                _remove(spill)
                return None
            with pa.OSFile(spill, "wb") as sink, pa.ipc.new_stream(sink, reader.schema) as writer:
                for batch in reader:
                    table = _blank_to_null(pa.Table.from_batches([batch]))
                    writer.write_table(table)
                    rows += batch.num_rows
                    if infer_numeric:
                        for name, column in zip(header, table.columns, strict=True):
                            if numeric[name] is not False and column.null_count < len(column):
                                numeric[name] = _all_numeric(column)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            _remove(spill)
            return None
        except BaseException:
            _remove(spill)
            raise
        while rest := fh.read(1 << 24):
            digest.update(rest)
    if rows == 0:
        _remove(spill)
        return None
    return list(header), rows, digest.hexdigest()[:16], [n for n, ok in numeric.items() if ok], spill


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _spill_slices(spill: str) -> Callable[[int], Iterator[pa.Table]]:
    """Reads the parsed rows back from the spill file, in slices of about ``rows`` rows
    (whole parse blocks); each block is read into fresh memory, so nothing of the file
    stays resident after its slice is released."""

    def slices(rows: int) -> Iterator[pa.Table]:
        with pa.OSFile(spill, "rb") as source:
            reader = pa.ipc.open_stream(source)
            pending: list[pa.RecordBatch] = []
            count = 0
            for batch in reader:
                pending.append(batch)
                count += batch.num_rows
                if count >= rows:
                    yield pa.Table.from_batches(pending, schema=reader.schema)
                    pending, count = [], 0
            if pending:
                yield pa.Table.from_batches(pending, schema=reader.schema)

    return slices


class _Header(list):
    """Header names, with the bytes read to find them (``prefix``)."""

    prefix: bytes = b""


def _checked_header(file: Location, fh, digest) -> _Header | None:
    """Read the start of the file: the header names (checked), or None for the careful path
    (empty file, byte order mark, no line end, header not UTF-8 or not CSV)."""
    prefix = fh.read(STREAM_PREFIX)
    digest.update(prefix)
    if not prefix.strip() or prefix.startswith(b"\xef\xbb\xbf") or b"\n" not in prefix:
        return None
    try:
        names = next(csv.reader(io.StringIO(prefix.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8"))))
    except (UnicodeDecodeError, StopIteration, csv.Error):
        return None
    _check_header_names(file.url, names)
    header = _Header(names)
    header.prefix = prefix
    return header


def _stream_csv(file: Location) -> tuple[pa.Table, str] | None:
    """The fast path of ``read_table`` for CSV; None when the file needs the careful path
    (empty, a byte order mark, an unparsable header or data Arrow refuses)."""
    digest = hashlib.sha256()
    with file.open("rb") as fh:
        header = _checked_header(file, fh, digest)
        if header is None:
            return None
        try:
            table = pacsv.read_csv(
                io.BufferedReader(_HashingReader(fh, header.prefix, digest), buffer_size=1 << 22),
                **_csv_options(header),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return None
        if table.num_rows == 0 or table.column_names != header:
            return None
        while rest := fh.read(1 << 24):  # Arrow reads to the end; hash any rest all the same
            digest.update(rest)
    return _blank_to_null(table), digest.hexdigest()[:16]


def read_parquet(url: str, source: Any) -> pa.Table:
    """The whole Parquet file ``source`` (``url`` names it in the error), read and decoded
    on the calling thread by the single-file reader, without read-ahead: a read of a corrupt
    file that fails while other decoders or Arrow's I/O pool (``read_table``'s dataset scan
    pre-buffers there even with ``use_threads=False``) still run makes the process abort at
    exit ("terminate called without an active exception", exit -6 instead of the one-line
    error; 2 of 16 runs under load)."""
    try:
        return pq.ParquetFile(source, pre_buffer=False).read(use_threads=False)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{url}: not a readable Parquet file ({_first_line(exc)})") from None


def _parse_table(file: Location, data: bytes) -> pa.Table:
    try:
        if file.url.endswith(".parquet"):
            table = read_parquet(file.url, pa.BufferReader(data))
            _check_header_names(file.url, table.column_names)
            if table.num_rows == 0:
                raise InputError(f"{file.url}: has no data rows")
            return _blank_to_null(table.cast(pa.schema([pa.field(n, pa.string()) for n in table.column_names])))
        if file.url.endswith(".gz"):
            import gzip
            import zlib

            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as exc:
                raise InputError(f"{file.url}: corrupt or truncated gzip data ({exc})") from None
        return parse_csv(data, file.url)
    except InputError:
        raise
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise InputError(f"{file.url}: cannot read ({_first_line(exc)})") from None


def parse_csv(data: bytes, source: str) -> pa.Table:
    if not data.strip():
        raise InputError(f"{source}: file is empty (expected a header line and data rows)")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    first_line = data.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        header_text = first_line.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{source}: line 1 (header) is not valid UTF-8 text") from None
    header = next(csv.reader(io.StringIO(header_text)))
    _check_header_names(source, header)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{source}: line {line} is not valid UTF-8 text (byte 0x{data[exc.start]:02x})") from None
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(block_size=1 << 24),
            parse_options=pacsv.ParseOptions(newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except pa.ArrowInvalid as exc:
        msg = _first_line(exc)
        # pyarrow: "CSV parse error: Expected 4 columns, got 5: ..." — add the line number.
        if "Expected" in msg and "columns" in msg:
            bad = _find_bad_row(data, len(header))
            where = f"line {bad[0]}: " if bad else ""
            if bad and bad[1].count('"') % 2:
                raise InputError(
                    f"{source}: {where}unclosed quote (a quoted field must end on the same line)"
                ) from None
            raise InputError(
                f"{source}: {where}wrong number of fields ({msg.split(': ', 1)[-1].split(':')[0]})"
            ) from None
        raise InputError(f"{source}: cannot parse CSV ({msg})") from None
    if table.num_rows == 0:
        raise InputError(f"{source}: has a header but no data rows")
    return _blank_to_null(table)


def _blank_to_null(table: pa.Table) -> pa.Table:
    """Empty and whitespace-only values are missing values (so an id of "  " is caught as
    an empty id, in CSV and Parquet alike)."""
    for i, name in enumerate(table.column_names):
        column = table.column(i)
        blank = pc.or_(pc.equal(column, ""), pc.utf8_is_space(column))
        if pc.any(blank).as_py():
            table = table.set_column(i, name, pc.if_else(blank, pa.scalar(None, pa.string()), column))
    return table


def _find_bad_row(data: bytes, ncols: int) -> tuple[int, str] | None:
    """(file line, text) of the first line whose field count differs from the header's or
    whose quotes do not close (rows never span lines: ``newlines_in_values=False``)."""
    for lineno, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        if not line:
            continue
        try:
            row = next(csv.reader([line]))
        except csv.Error:
            return lineno, line
        if len(row) != ncols or line.count('"') % 2:
            return lineno, line
    return None


def _check_header_names(source: str, names: list[str]) -> None:
    seen = set()
    for i, name in enumerate(names):
        if not name.strip():
            raise InputError(f"{source}: header column #{i + 1} has an empty name")
        if name in seen:
            raise InputError(f"{source}: header has column {name!r} twice")
        seen.add(name)


def _all_numeric(column: pa.ChunkedArray) -> bool:
    values = column.drop_null()
    if len(values) == 0:
        return False
    try:
        values.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
