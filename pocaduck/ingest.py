"""Blockwise ingestion: one Ingestor per worker buffers writes and packs them into Parquet files.

A write costs a validation and an append to in-memory lists. Work scales with
the data: when the buffer reaches ``max_points_per_file`` (or
``max_bytes_per_file``) it is sorted by label, written as one Parquet file
(temp name, then atomic publish) and indexed with one bulk insert committed
after the file exists.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from types import TracebackType

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import layout
from .config import StorageConfig, as_config
from .consolidate import consolidate
from .errors import (
    DamagedStoreError,
    IngestorClosedError,
    InvalidArgumentError,
    InvalidBlockIdError,
    InvalidLabelError,
    InvalidPointsError,
    SchemaMismatchError,
    WorkerBusyError,
    WorkerWriteError,
)
from .index import bbox_columns, create_worker_tables
from .layout import Schema
from .storage import Storage, open_storage

logger = logging.getLogger("pocaduck")

# Parquet encodes one file on one core; two files encoded at once keep both cores of a small machine busy
# and halve the wait for the last file at finalize().
FILES_IN_FLIGHT = 2

# What a writer thread turns into one file: its file id, then the labels, block ids and (D, n) chunks.
_Buffer = tuple[int, list[int], list[object], list[np.ndarray]]

_UINT64_LIMIT = 2**64
_INT64_MIN, _INT64_LIMIT = -(2**63), 2**63


@dataclass
class IngestStats:
    """Running totals of one Ingestor, for progress reports."""

    writes: int = 0
    points: int = 0
    files: int = 0
    bytes: int = 0


def check_label(label: object) -> int:
    """Labels are integers in [0, 2**64); numpy integers are accepted, bools and floats are not.

    >>> check_label(np.uint64(2**64 - 1))
    18446744073709551615
    """
    if type(label) is not int:
        if not isinstance(label, np.integer):
            raise InvalidLabelError(f"label must be an integer in [0, 2**64), got {type(label).__name__} {label!r}")
        label = int(label)
    if not 0 <= label < _UINT64_LIMIT:
        raise InvalidLabelError(f"label {label} is outside the uint64 range [0, 2**64)")
    return label


def block_id_type_of(block_id: object) -> tuple[object, str]:
    """Return the block id in canonical form with its type name (``string`` or ``int64``).

    >>> block_id_type_of("0_1_2")
    ('0_1_2', 'string')
    """
    if type(block_id) is str:
        if not block_id.isascii():
            try:
                block_id.encode()
            except UnicodeEncodeError as error:  # a lone surrogate: Parquet would refuse it only at finalize()
                raise InvalidBlockIdError(
                    f"block id {block_id!r} is not valid UTF-8 text ({error.reason}); decode it properly or use "
                    f"an integer block id"
                ) from error
        return block_id, "string"
    if type(block_id) is int or isinstance(block_id, np.integer):
        value = int(block_id)
        if not _INT64_MIN <= value < _INT64_LIMIT:
            raise InvalidBlockIdError(f"integer block id {value} is outside the int64 range")
        return value, "int64"
    raise InvalidBlockIdError(f"block id must be a str or an int, got {type(block_id).__name__} {block_id!r}")


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive integer, got {type(value).__name__} {value!r}")
    return int(value)


def _check_compression(compression: object) -> str:
    """Try the codec on a one-row table now, so a bad name fails here and not at the first file.

    pyarrow's codecs depend on how it was built, so asking its writer is the only exact test.
    """
    if isinstance(compression, str):
        try:
            pq.write_table(pa.table({"probe": [0]}), pa.BufferOutputStream(), compression=compression)
            return compression
        except (pa.ArrowException, ValueError):
            pass
    raise InvalidArgumentError(
        f"compression {compression!r} is not a codec pyarrow's Parquet writer accepts: use 'lz4', 'zstd', "
        f"'snappy', 'gzip', 'brotli' or 'none'"
    )


def _fits_without_loss(source: np.dtype, target: np.dtype) -> bool:
    """Integers may widen and float32 may become float64; nothing crosses int/float."""
    if source == target:
        return True
    same_family = source.kind == target.kind or (source.kind == "u" and target.kind == "i")
    return same_family and np.can_cast(source, target, "safe")


def write_point_file(
    storage: Storage,
    staging: str,
    path: str,
    schema: Schema,
    chunk_labels: np.ndarray,
    chunk_blocks: pa.Array,
    counts: np.ndarray,
    values: np.ndarray,
    *,
    row_group_size: int,
    compression: str,
) -> tuple[int, str]:
    """Write label-sorted chunks (``values`` is (D, N), one column per row) as one of the store's Parquet files.

    Ingestion and compaction both write through here, so every payload file has
    the layout queries expect, page checksums included. The file is built in
    ``staging`` and published at ``path`` atomically; returns its size in bytes
    and its checksum, taken from the local copy before publishing.
    """
    chunk_of_row = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    string_blocks = pa.types.is_string(chunk_blocks.type)
    block_type = pa.dictionary(pa.int32(), pa.string()) if string_blocks else chunk_blocks.type
    arrow_schema = pa.schema(
        [
            ("label", pa.uint64()),
            ("block_id", block_type),
            *((name, pa.from_numpy_dtype(schema.dtype)) for name in schema.columns),
        ]
    )
    temp = os.path.join(staging, os.path.basename(path) + ".tmp")
    # Delta encoding (integers) and byte-stream-split (floats) shrink clustered neuron
    # coordinates several times at no cost in write or read speed.
    value_encoding = "DELTA_BINARY_PACKED" if schema.dtype.kind in "iu" else "BYTE_STREAM_SPLIT"
    with pq.ParquetWriter(
        temp,
        arrow_schema,
        compression=compression,
        use_dictionary=["label", "block_id"],
        write_statistics=["label"],
        column_encoding=dict.fromkeys(schema.columns, value_encoding),
        write_page_checksum=True,  # queries verify them: a flipped bit fails the read instead of moving a point
    ) as writer:
        # One row group per call, so every group but the last holds exactly row_group_size rows (queries
        # locate rows by that), each with a dictionary of only its own labels and blocks: a file-wide block
        # dictionary is repeated in every row group, which made files of many small writes ~10x larger.
        for start in range(0, len(chunk_of_row), row_group_size):
            rows = slice(start, start + row_group_size)
            chunks = chunk_of_row[rows]
            if string_blocks:
                first = int(chunks[0])
                dictionary = chunk_blocks.slice(first, int(chunks[-1]) - first + 1)
                blocks = pa.DictionaryArray.from_arrays(pa.array(chunks - first), dictionary)
            else:
                blocks = chunk_blocks.take(pa.array(chunks))
            group = pa.table([chunk_labels[chunks], blocks, *(column[rows] for column in values)], schema=arrow_schema)
            writer.write_table(group, row_group_size=row_group_size)
    byte_size = os.path.getsize(temp)
    with open(temp, "rb") as written:
        file_checksum = layout.checksum(iter(functools.partial(written.read, 2**22), b""))
    storage.publish(temp, path)
    return byte_size, file_checksum


def chunk_index_rows(
    schema: Schema,
    chunk_labels: np.ndarray,
    chunk_blocks: pa.Array,
    file_id: int,
    counts: np.ndarray,
    values: np.ndarray,
) -> pa.Table:
    """The ``point_index`` rows of a file written by :func:`write_point_file`: offsets, counts and bounding boxes."""
    offsets = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=offsets[1:])
    spatial = values[: len(schema.spatial_columns)]
    bounds = [*np.minimum.reduceat(spatial, offsets, axis=1), *np.maximum.reduceat(spatial, offsets, axis=1)]
    return pa.table(
        [chunk_labels, chunk_blocks, np.full(len(counts), file_id, np.int32), offsets, counts, *bounds],
        names=["label", "block_id", "file_id", "row_offset", "point_count", *bbox_columns(schema)],
    )


class Ingestor:
    """Writes one worker's points into a store.

    Each worker of a parallel job uses its own ``worker_id``. A new Ingestor for
    a worker id replaces whatever an earlier, unfinished run of that worker
    left behind, so a crashed or retried worker simply runs again.

    >>> import tempfile
    >>> store = tempfile.mkdtemp()
    >>> with Ingestor(StorageConfig(store), worker_id=0) as ingestor:
    ...     ingestor.write(label=2**64 - 1, block_id="0_0_0", points=np.array([[1, 2, 3]]))
    >>> Ingestor.consolidate_indexes(StorageConfig(store)).endswith("unified_index.duckdb")
    True
    """

    def __init__(
        self,
        storage_config: StorageConfig | str | os.PathLike,
        worker_id: str | int,
        max_points_per_file: int = 10_000_000,
        verbose: bool = False,
        *,
        columns: list[str] | tuple[str, ...] | None = None,
        max_bytes_per_file: int = 512 * 2**20,
        row_group_size: int = layout.ROW_GROUP_SIZE,
        compression: str = "lz4",
    ):
        self.max_points_per_file = _positive_int("max_points_per_file", max_points_per_file)
        self.max_bytes_per_file = _positive_int("max_bytes_per_file", max_bytes_per_file)
        self.row_group_size = _positive_int("row_group_size", row_group_size)
        self.compression = _check_compression(compression)
        self.storage_config = as_config(storage_config)
        self.worker_id = layout.check_worker_id(worker_id)
        self.verbose = verbose
        self.stats = IngestStats()
        self._requested_columns = layout.column_names(columns) if columns is not None else None
        self._storage = open_storage(self.storage_config)
        self._schema = layout.read_schema(self._storage)
        if self._schema is not None and self._requested_columns not in (None, self._schema.columns):
            raise SchemaMismatchError(
                f"columns {list(self._requested_columns)} differ from the store's {list(self._schema.columns)}"
            )
        self._index: duckdb.DuckDBPyConnection | None = None
        self._writer = ThreadPoolExecutor(max_workers=FILES_IN_FLIGHT, thread_name_prefix="pocaduck-writer")
        self._in_flight: deque[tuple[Future, _Buffer]] = deque()
        self._failed: list[_Buffer] = []  # buffers whose file could not be written, kept for finalize() to retry
        self._index_lock = threading.Lock()  # the writer threads share the index connection
        self._next_file_id = 0
        self._closed = False
        self._resources = ExitStack()
        with layout.writing(self._storage, layout.worker_lock(self.worker_id)):
            free = self._resources.enter_context(self._storage.lock(layout.worker_lock(self.worker_id)))
        if not free:
            self._resources.close()
            raise WorkerBusyError(
                f"worker {self.worker_id!r} is already being written by another live Ingestor on "
                f"{self._storage.describe('')}; give each worker its own id"
            )
        try:
            self._previous = self._read_finalized()
            with layout.writing(self._storage, layout.sessions_dir(self.worker_id)):
                self._discard_unfinished_sessions()
        except BaseException:
            self.close()
            raise
        self.session_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"
        self._labels: list[int] = []
        self._block_ids: list[object] = []
        self._chunks: list[np.ndarray] = []  # each (D, n): one column per row, ready for Arrow
        self._buffered_points = 0
        self._buffered_bytes = 0

    # -- lifecycle -------------------------------------------------------

    def _read_finalized(self) -> dict:
        """The last run's record; if it is damaged, every session on disk counts as superseded.

        The unified index in force may still refer to any of them, so none may be deleted now:
        ``pocaduck gc`` removes those that no index refers to.
        """
        try:
            return layout.read_finalized(self._storage, self.worker_id) or {}
        except DamagedStoreError as error:
            logger.warning("worker %s: %s; keeping its sessions until gc", self.worker_id, error)
            return {"session": None, "superseded": self._storage.listdir(layout.sessions_dir(self.worker_id))}

    def _discard_unfinished_sessions(self) -> None:
        """Remove sessions of earlier runs that never finalized: no index anywhere refers to them."""
        kept = {self._previous.get("session"), *self._previous.get("superseded", [])}
        for session_id in self._storage.listdir(layout.sessions_dir(self.worker_id)):
            if session_id not in kept:
                logger.info("worker %s: discarding unfinished session %s", self.worker_id, session_id)
                self._storage.delete_tree(layout.session_dir(self.worker_id, session_id))

    def __enter__(self) -> Ingestor:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None and not self._closed:
            self.finalize()
        else:
            self.close()

    def close(self) -> None:
        """Release the worker without finalizing: its session will be discarded by the next run."""
        self._writer.shutdown(wait=True)
        self._in_flight.clear()
        self._failed.clear()
        if self._index is not None:
            self._index.close()
            self._index = None
        self._closed = True
        self._resources.close()

    def finalize(self) -> None:
        """Flush what is buffered, publish this worker's index and mark the worker complete.

        If a file cannot be written (disk full, file too large, store read-only), this raises and
        the Ingestor stays open holding every write not yet published: fix the cause and call
        ``finalize()`` again (or ``close()`` to give the run up).
        """
        self._require_open()
        failed, self._failed = self._failed, []
        for buffer in failed:
            self._submit(buffer)
        self._flush()
        self._wait_for_writer()
        record = {"session": None, **asdict(self.stats)}
        if self.stats.files:
            if self._index is not None:
                self._index.execute("CHECKPOINT")
                self._index.close()
                self._index = None
            session_index = layout.session_index(self.worker_id, self.session_id)
            # Already there after a retried finalize(), or on local disk where the index is built in place.
            if not self._storage.exists(session_index):
                with layout.writing(self._storage, session_index):
                    self._storage.publish(self._local_index_path, session_index)
            record["session"] = self.session_id
        superseded = [s for s in (self._previous.get("session"), *self._previous.get("superseded", [])) if s]
        record["superseded"] = superseded
        with layout.writing(self._storage, layout.worker_finalized(self.worker_id)):
            self._storage.write_bytes(layout.worker_finalized(self.worker_id), json.dumps(record).encode())
        if self.verbose:
            logger.info("worker %s finalized: %s", self.worker_id, record)
        self.close()

    def _require_open(self) -> None:
        if self._closed:
            raise IngestorClosedError(f"the Ingestor of worker {self.worker_id!r} was finalized or closed")

    # -- writing ---------------------------------------------------------

    def write(self, label: int, block_id: str | int, points: np.ndarray) -> None:
        """Add one label's points found in one block.

        ``points`` is an (N, D) integer or float array; empty arrays are skipped.
        """
        self._require_open()
        label = check_label(label)
        block_id, block_id_type = block_id_type_of(block_id)
        if not isinstance(points, np.ndarray):
            raise InvalidPointsError(f"points must be a numpy array of shape (N, D), got {type(points).__name__}")
        if points.ndim != 2:
            raise InvalidPointsError(f"points must have shape (N, D), got shape {points.shape}")
        if points.shape[0] == 0:
            return
        schema = self._schema or self._establish_schema(points, block_id_type)
        self._check_fits(points, block_id_type, schema)
        columns = np.array(points.T, dtype=schema.dtype, order="C")  # our own copy: the caller may reuse theirs
        self.stats.writes += 1
        while columns.shape[1]:
            room = self.max_points_per_file - self._buffered_points
            piece = columns[:, :room]
            self._labels.append(label)
            self._block_ids.append(block_id)
            self._chunks.append(piece)
            self._buffered_points += piece.shape[1]
            self._buffered_bytes += piece.nbytes
            columns = columns[:, room:]
            if self._buffered_points >= self.max_points_per_file or self._buffered_bytes >= self.max_bytes_per_file:
                self._flush()

    def _establish_schema(self, points: np.ndarray, block_id_type: str) -> Schema:
        if points.dtype not in layout.SUPPORTED_DTYPES:
            raise InvalidPointsError(
                f"points have dtype {points.dtype}; use one of {', '.join(d.name for d in layout.SUPPORTED_DTYPES)}"
            )
        columns = self._requested_columns or layout.default_columns(points.shape[1])
        if len(columns) != points.shape[1]:
            raise SchemaMismatchError(
                f"{len(columns)} column names {list(columns)} for points with {points.shape[1]} columns"
            )
        with layout.writing(self._storage, layout.MANIFEST):
            self._schema = layout.establish_schema(self._storage, Schema(columns, points.dtype, block_id_type))
        return self._schema

    @staticmethod
    def _check_fits(points: np.ndarray, block_id_type: str, schema: Schema) -> None:
        if points.shape[1] != schema.dimensions:
            raise SchemaMismatchError(
                f"points have {points.shape[1]} columns but the store has {schema.dimensions}: {list(schema.columns)}"
            )
        if not _fits_without_loss(points.dtype, schema.dtype):
            raise SchemaMismatchError(
                f"points of dtype {points.dtype} do not fit the store's dtype {schema.dtype} without loss; "
                f"convert them explicitly if that is what you want"
            )
        if block_id_type != schema.block_id_type:
            raise SchemaMismatchError(f"this store uses {schema.block_id_type} block ids, got a {block_id_type} one")
        if points.dtype.kind == "f" and not np.isfinite(points).all():
            bad_row = int(np.flatnonzero(~np.isfinite(points).all(axis=1))[0])
            raise InvalidPointsError(f"points contain NaN or infinity (first at row {bad_row}); nothing was written")

    # -- flushing --------------------------------------------------------

    @functools.cached_property
    def _staging(self) -> str:
        """Local folder for this session's files, made on first use so a worker with no data leaves none."""
        return self._storage.staging_dir(layout.session_dir(self.worker_id, self.session_id))

    @property
    def _local_index_path(self) -> str:
        return os.path.join(self._staging, "index.duckdb")

    def _open_index(self) -> duckdb.DuckDBPyConnection:
        if self._index is None:
            self._index = duckdb.connect(self._local_index_path)
            create_worker_tables(self._index, self._schema)
        return self._index

    def _flush(self) -> None:
        """Hand the buffer to a writer thread, which sorts, encodes and indexes it while we keep buffering."""
        if not self._chunks:
            return
        buffer = (self._next_file_id, self._labels, self._block_ids, self._chunks)
        self._next_file_id += 1
        self._labels, self._block_ids, self._chunks = [], [], []
        self._buffered_points = self._buffered_bytes = 0
        self._submit(buffer)

    def _submit(self, buffer: _Buffer) -> None:
        self._wait_for_writer(keep=FILES_IN_FLIGHT - 1)  # memory stays bounded by FILES_IN_FLIGHT + 1 buffers
        self._in_flight.append((self._writer.submit(self._publish_file, *buffer), buffer))

    def _wait_for_writer(self, keep: int = 0) -> None:
        """Block until at most ``keep`` files are in flight, oldest first; raise a failure here if one failed.

        A failed file's buffer stays with the Ingestor, so no write is lost to a full disk or a passing fault.
        """
        while len(self._in_flight) > keep:
            in_flight, buffer = self._in_flight.popleft()
            try:
                in_flight.result()
            except Exception as error:
                self._failed.append(buffer)
                raise WorkerWriteError(
                    f"worker {self.worker_id!r} could not write or index a file in {self._staging}: {error}. "
                    f"Nothing is lost: the Ingestor keeps its points. Fix the cause and call finalize() again"
                ) from error

    def _publish_file(self, file_id: int, labels: list[int], block_ids: list[object], chunks: list[np.ndarray]) -> None:
        """Sort buffered chunks by label, write them as one Parquet file, then commit the index rows
        that point at it (runs on a writer thread; files are encoded in parallel, indexed one at a time)."""
        schema = self._schema
        unsorted_labels = np.array(labels, dtype=np.uint64)
        order = np.argsort(unsorted_labels, kind="stable")
        chunk_labels = unsorted_labels[order]
        counts = np.fromiter((chunks[i].shape[1] for i in order), dtype=np.int64, count=len(order))
        values = np.concatenate([chunks[i] for i in order], axis=1)
        chunk_blocks = self._block_column([block_ids[i] for i in order])
        path = layout.data_file(self.worker_id, self.session_id, file_id)
        byte_size, file_checksum = write_point_file(
            self._storage,
            self._staging,
            path,
            schema,
            chunk_labels,
            chunk_blocks,
            counts,
            values,
            row_group_size=self.row_group_size,
            compression=self.compression,
        )
        rows = chunk_index_rows(schema, chunk_labels, chunk_blocks, file_id, counts, values)
        with self._index_lock:
            index = self._open_index()
            index.begin()
            try:
                index.execute(
                    "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?)",
                    [file_id, path, int(counts.sum()), self.row_group_size, byte_size, file_checksum],
                )
                index.register("new_rows", rows)
                index.execute("INSERT INTO point_index SELECT * FROM new_rows")
                index.unregister("new_rows")
                index.commit()
            except BaseException:
                with contextlib.suppress(duckdb.Error):  # a failed commit may have ended the transaction itself
                    index.rollback()  # a retry of this file inserts its rows afresh
                raise
            self.stats.files += 1
            self.stats.bytes += byte_size
            self.stats.points += int(counts.sum())
        if self.verbose:
            logger.info("worker %s: wrote %s (%d points, %d bytes)", self.worker_id, path, counts.sum(), byte_size)

    def _block_column(self, block_ids: list[object]) -> pa.Array:
        if self._schema.block_id_type == "int64":
            return pa.array(block_ids, pa.int64())
        return pa.array(block_ids, pa.string())

    # -- consolidation (kept here for the original API) ----------------------

    @staticmethod
    def consolidate_indexes(
        storage_config: StorageConfig | str | os.PathLike,
        output_path: str | None = None,
        *,
        ignore_unfinalized: bool = False,
    ) -> str:
        """Merge every finalized worker's index into the unified index; see :func:`pocaduck.consolidate`."""
        return consolidate(storage_config, output_path, ignore_unfinalized=ignore_unfinalized)
