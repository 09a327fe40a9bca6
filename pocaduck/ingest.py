"""Blockwise ingestion: one Ingestor per worker buffers writes and packs them into point files.

A write costs a validation and an append to in-memory lists (``write_block``
validates a whole block's labels at once). Work scales with the data: when the
buffer reaches ``max_points_per_file`` (or ``max_bytes_per_file``) it is sorted
by label, written as one point file in the store's payload (Parquet, or Arrow
IPC: see ``pointfile``; temp name, then atomic publish) and indexed with one
bulk insert committed after the file exists.
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

from . import layout
from .arguments import flag, positive_int
from .config import StorageConfig
from .errors import (
    DamagedStoreError,
    IngestorClosedError,
    InvalidPointsError,
    SchemaMismatchError,
    WorkerBusyError,
    WorkerWriteError,
)
from .index import create_worker_tables
from .keys import check_block_id, check_label, check_labels
from .layout import Schema
from .pointfile import check_compression, chunk_index_rows, write_point_file
from .replacement import record_session, utc_now
from .store import Store, open_store

logger = logging.getLogger("pocaduck")

# Parquet encodes one file on one core; two files encoded at once keep both cores of a small machine busy
# and halve the wait for the last file at finalize().
FILES_IN_FLIGHT = 2

# What a writer thread turns into one file: its file id, then the labels, block ids and (D, n) chunks.
_Buffer = tuple[int, list[int], list[object], list[np.ndarray]]


@dataclass
class IngestStats:
    """Running totals of one Ingestor, for progress reports."""

    writes: int = 0
    points: int = 0
    files: int = 0
    bytes: int = 0


def _check_points(points: object) -> None:
    """Points are a finite (N, D) array; checked before the first write fixes the store's schema from them."""
    if not isinstance(points, np.ndarray):
        raise InvalidPointsError(f"points must be a numpy array of shape (N, D), got {type(points).__name__}")
    if points.ndim != 2:
        raise InvalidPointsError(f"points must have shape (N, D), got shape {points.shape}")
    if points.dtype.kind == "f" and not np.isfinite(points).all():
        bad_row = int(np.flatnonzero(~np.isfinite(points).all(axis=1))[0])
        raise InvalidPointsError(f"points contain NaN or infinity (first at row {bad_row}); nothing was written")


def _fits_without_loss(source: np.dtype, target: np.dtype) -> bool:
    """Integers may widen and float32 may become float64; nothing crosses int/float."""
    if source == target:
        return True
    same_family = source.kind == target.kind or (source.kind == "u" and target.kind == "i")
    return same_family and np.can_cast(source, target, "safe")


class Ingestor:
    """Writes one worker's points into a store.

    Each worker of a parallel job uses its own ``worker_id``. A new Ingestor for
    a worker id replaces whatever an earlier, unfinished run of that worker
    left behind, so a crashed or retried worker simply runs again.

    Files are written in the store's payload, which its manifest records
    (``create_store(..., payload="arrow")``, else the first worker's
    ``payload``, else Parquet); asking for another is refused.
    ``compression=None`` is the payload's default codec (LZ4 for Parquet, none
    for Arrow IPC).

    >>> import tempfile
    >>> store = tempfile.mkdtemp()
    >>> with Ingestor(StorageConfig(store), worker_id=0) as ingestor:
    ...     ingestor.write(label=2**64 - 1, block_id="0_0_0", points=np.array([[1, 2, 3]]))
    >>> Ingestor.consolidate_indexes(StorageConfig(store)).endswith("unified_index.duckdb")
    True
    """

    def __init__(
        self,
        storage_config: Store | StorageConfig | str | os.PathLike,
        worker_id: str | int,
        max_points_per_file: int = 10_000_000,
        verbose: bool = False,
        *,
        columns: list[str] | tuple[str, ...] | None = None,
        max_bytes_per_file: int = 512 * 2**20,
        row_group_size: int = layout.ROW_GROUP_SIZE,
        compression: str | None = None,
        payload: str | None = None,
    ):
        self.max_points_per_file = positive_int(max_points_per_file, "max_points_per_file")
        self.max_bytes_per_file = positive_int(max_bytes_per_file, "max_bytes_per_file")
        self.row_group_size = positive_int(row_group_size, "row_group_size")
        store = open_store(storage_config)
        self.storage_config = store.config
        self.worker_id = layout.check_worker_id(worker_id)
        self.verbose = verbose
        self.stats = IngestStats()
        self._requested_columns = layout.column_names(columns) if columns is not None else None
        self._storage = store.storage
        self._schema = store.schema
        if self._schema is not None and self._requested_columns not in (None, self._schema.columns):
            raise SchemaMismatchError(
                f"columns {list(self._requested_columns)} differ from the store's {list(self._schema.columns)}"
            )
        self._requested_payload = None if payload is None else layout.check_payload(payload)
        self._requested_compression = compression
        self.payload = self._payload_in_force(self._schema)
        self.compression = check_compression(self.payload, compression)
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
        self._replaced: set[object] = set()  # blocks this session replaces (see pocaduck.replacement)
        self._session_recorded = False

    # -- lifecycle -------------------------------------------------------

    def _payload_in_force(self, schema: Schema | None) -> str:
        """The store's payload (what every worker writes), refusing another one asked for."""
        if schema is None:
            return self._requested_payload or layout.DEFAULT_PAYLOAD
        if self._requested_payload not in (None, schema.payload):
            raise SchemaMismatchError(
                f"this Ingestor was asked for payload {self._requested_payload!r}, but the store's manifest says "
                f"{schema.payload!r}, which every worker of a store writes: leave payload out, or write to another "
                f"store (compact(store, payload=...) rewrites a store in the other format)"
            )
        return schema.payload

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
        if self._replaced and self._index is None and not self._session_recorded:
            # A replacing session is published even with no points: it removes the old ones. A store that still
            # has no schema holds no points to remove.
            self._schema = self._schema or layout.read_schema(self._storage)
            if self._schema is not None:
                self._open_index()
        if self._index is not None and not self._session_recorded:
            with self._index_lock:
                record_session(self._index, self._schema, self._replaced, utc_now())
            self._session_recorded = True
        if self.stats.files or self._session_recorded:
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

    def write(self, label: int, block_id: str | int, points: np.ndarray, *, replace: bool = False) -> None:
        """Add one label's points found in one block.

        ``points`` is an (N, D) integer or float array; empty arrays are skipped.
        ``replace=True`` marks the block as replaced by this session: see :meth:`write_block`.
        """
        self._require_open()
        label = check_label(label)
        block_id, block_id_type = check_block_id(block_id)
        _check_points(points)
        replace = flag(replace, "replace")
        fits = self._fit_schema(points, block_id_type)
        if replace:
            self._mark_replaced(block_id, block_id_type)
        if not fits:
            return
        self.stats.writes += 1
        self._append(label, block_id, np.array(points.T, dtype=self._schema.dtype, order="C"))

    def write_block(
        self, block_id: str | int, labels: np.ndarray, points: np.ndarray, *, replace: bool = False
    ) -> None:
        """Add every label's points found in one block in one call: ``labels[i]`` is the label of ``points[i]``.

        The same as one ``write`` per distinct label, with the block checked once:
        the way to write a block of many labels (``scan_volume`` writes so).

        ``replace=True`` (a block re-scanned in place) marks the block as replaced
        by this session: from the first consolidation after ``finalize()``, the
        block's points are this session's writes of it (empty ``points`` too: the
        block then holds nothing), and every earlier write of it, by any worker,
        as ingested or compacted, is dropped. A later plain write of the block is
        kept beside it; see :mod:`pocaduck.replacement` for the exact rule.

        >>> import tempfile
        >>> with Ingestor(tempfile.mkdtemp(), worker_id=0) as ingestor:
        ...     ingestor.write_block("0_0_0", np.array([7, 5, 7]), np.array([[1, 1, 1], [2, 2, 2], [3, 3, 3]]))
        ...     ingestor.stats.writes, ingestor.stats.points == 0
        (2, True)
        """
        self._require_open()
        block_id, block_id_type = check_block_id(block_id)
        _check_points(points)
        labels = check_labels(labels, len(points))
        replace = flag(replace, "replace")
        fits = self._fit_schema(points, block_id_type)
        if replace:
            self._mark_replaced(block_id, block_id_type)
        if not fits:
            return
        if len(labels) > 1 and (labels[1:] < labels[:-1]).any():
            order = np.argsort(labels, kind="stable")
            labels, points = labels[order], points[order]
        columns = np.array(points.T, dtype=self._schema.dtype, order="C")
        starts = np.flatnonzero(np.concatenate(([True], labels[1:] != labels[:-1])))
        ends = np.append(starts[1:], len(labels))
        self.stats.writes += len(starts)
        for label, start, end in zip(labels[starts].tolist(), starts.tolist(), ends.tolist(), strict=True):
            self._append(label, block_id, columns[:, start:end])

    def _mark_replaced(self, block_id: str | int, block_id_type: str) -> None:
        """Record that this session replaces ``block_id``, once its type fits the store's block ids.

        Before this session wrote a point, the store's schema is read afresh: another worker may have declared it.
        """
        schema = self._schema or layout.read_schema(self._storage)
        if schema is not None and block_id_type != schema.block_id_type:
            raise SchemaMismatchError(f"this store uses {schema.block_id_type} block ids, got a {block_id_type} one")
        self._replaced.add(block_id)

    def _fit_schema(self, points: np.ndarray, block_id_type: str) -> bool:
        """Refuse points that do not fit the store (fixing its schema on the first write); False when empty."""
        if points.shape[0] == 0:
            return False
        schema = self._schema or self._establish_schema(points, block_id_type)
        self._check_fits(points, block_id_type, schema)
        return True

    def _append(self, label: int, block_id: str | int, columns: np.ndarray) -> None:
        """Buffer one label's (D, n) columns, our own copy, cut where a file fills up."""
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
        proposed = Schema(columns, points.dtype, block_id_type, payload=self.payload)
        with layout.writing(self._storage, layout.MANIFEST):
            schema = layout.establish_schema(self._storage, proposed)
        # Another worker may have declared the store first, with its payload: follow it, or refuse if ours was asked.
        self.payload = self._payload_in_force(schema)
        self.compression = check_compression(self.payload, self._requested_compression)
        self._schema = schema
        return schema

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
        """Sort buffered chunks by label, write them as one point file, then commit the index rows
        that point at it (runs on a writer thread; files are encoded in parallel, indexed one at a time)."""
        schema = self._schema
        unsorted_labels = np.array(labels, dtype=np.uint64)
        order = np.argsort(unsorted_labels, kind="stable")
        chunk_labels = unsorted_labels[order]
        counts = np.fromiter((chunks[i].shape[1] for i in order), dtype=np.int64, count=len(order))
        values = np.concatenate([chunks[i] for i in order], axis=1)
        chunk_blocks = self._block_column([block_ids[i] for i in order])
        path = layout.data_file(self.worker_id, self.session_id, file_id, self.payload)
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
        storage_config: Store | StorageConfig | str | os.PathLike,
        output_path: str | None = None,
        *,
        ignore_unfinalized: bool = False,
    ) -> str:
        """Merge every finalized worker's index into the unified index; see :func:`pocaduck.consolidate`."""
        from .consolidate import consolidate  # the original API's spelling; consolidation sits above ingestion

        return consolidate(storage_config, output_path, ignore_unfinalized=ignore_unfinalized)
