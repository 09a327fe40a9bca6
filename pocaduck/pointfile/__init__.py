"""The store's point files: how they are written, how a run of their rows is found and read.

A point file holds one row per point, sorted by label: the label, the block id
and the point's values (one value per schema column). Two formats, one per
module: Parquet (``_parquet.py``, the default: compressed, checksummed pages)
and Arrow IPC files (``_arrow.py``: a label's points are a slice of one flat
buffer, memory-mapped on local disk). A file's extension says which
(``layout.PAYLOADS``); nothing above this package asks.

The index (``point_index``) names a run of rows by ``(file_id, row_offset,
point_count)``. The invariant that ties writer and reader, in both formats:
every row group (Arrow: record batch) but the last holds exactly
``row_group_size`` rows, so a row offset alone says which group to read.
Ingestion and compaction write through :func:`write_point_file`; every reader
gathers rows through :class:`PointFiles`, and ``verify`` decodes whole files
with :func:`count_rows`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from .. import layout
from .._immutables import IMMUTABLES, version_key
from ..errors import DataFileError, InvalidArgumentError, StorageAccessError, StorageUnavailableError
from ..index import bbox_columns
from ..layout import Schema
from ..sampling import read_marker
from ..storage import Storage
from . import _arrow, _parquet, _selection

_FORMATS = {"parquet": _parquet, "arrow": _arrow}
_OPENERS = {"parquet": _parquet.ParquetPointFile, "arrow": _arrow.ArrowPointFile}
_DEFAULT_CODECS = {"parquet": "lz4", "arrow": "none"}

_OPEN_FILES_KEPT = 256
# What an open file counts for in the process's cache at least: its handle and map, beside its footer. It bounds
# the files the cache keeps open (256 MB / 128 KiB: 2,048) well under a process's usual limit of open files.
_KEPT_FILE_BYTES = 128 * 2**10
_GUESSED_FILES = 4  # files opened ahead, with the directory page, when a bucket's store has no more (compacted)
# Rows iter_rows decodes at a time (4 default row groups, ~0.4 MB of 3 float32): on an 8 M-point label, 16 groups
# streamed no faster and held 15 MB more of Arrow's decoding buffers.
_PIECE_ROWS = 4 * layout.ROW_GROUP_SIZE
# Runs this long on average are copied as slices (~1.3 ns a row, ~1 µs a slice and column) rather than gathered by
# row index (~5 ns a row, plus making the indices): a body compacted by mapping, read at a later version, is a few
# long runs (its supervoxels, and those merged into it since) in one file.
_SLICED_RUN_ROWS = 512


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
    metadata: dict[bytes, bytes] | None = None,
) -> tuple[int, str]:
    """Write label-sorted chunks (``values`` is (D, N), one column per row) as one of the store's point files.

    Ingestion and compaction both write through here, so every payload file has
    the layout queries expect; ``path``'s extension picks the format, and
    ``compression`` must be one it takes (see :func:`check_compression`).
    ``metadata`` goes into the file's footer or schema (compaction declares its
    row order there). The file is built in ``staging`` and published at ``path``
    atomically; returns its size in bytes and its checksum, taken from the
    local copy before publishing.
    """
    temp = os.path.join(staging, os.path.basename(path) + ".tmp")
    _FORMATS[layout.payload_of(path)].write(
        temp, schema, chunk_labels, chunk_blocks, counts, values, row_group_size, compression, metadata
    )
    byte_size = os.path.getsize(temp)
    with open(temp, "rb") as written:
        file_checksum = layout.checksum(iter(functools.partial(written.read, 2**22), b""))
    storage.publish(temp, path)
    return byte_size, file_checksum


def check_compression(payload: str, compression: object) -> str:
    """The codec a payload's files are written with: ``compression`` checked, None giving the payload's default.

    Parquet takes the codecs pyarrow's Parquet writer was built with (default
    ``lz4``); Arrow IPC files take ``none`` (the default), ``lz4`` or ``zstd``.

    >>> check_compression("arrow", None), check_compression("parquet", None), check_compression("arrow", "zstd")
    ('none', 'lz4', 'zstd')
    >>> check_compression("arrow", "snappy")
    Traceback (most recent call last):
    pocaduck.errors.InvalidArgumentError: compression 'snappy' does not suit payload 'arrow': ...
    """
    payload = layout.check_payload(payload)
    codec = _DEFAULT_CODECS[payload] if compression is None else compression
    if isinstance(codec, str) and _FORMATS[payload].check_codec(codec):
        return codec
    raise InvalidArgumentError(
        f"compression {compression!r} does not suit payload {payload!r}: Parquet files take "
        f"{_parquet.CODECS}; Arrow IPC files take {_arrow.CODECS}"
    )


def count_rows(path: str, data: bytes) -> int:
    """Decode every row of a whole point file's bytes (``path`` names its format) and return the row count.

    Raises ``OSError`` or ``pyarrow.ArrowException`` when the file does not decode (Parquet: a page checksum fails).
    """
    return _FORMATS[layout.payload_of(path)].count_rows(data)


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


def _row_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(start, start + count)`` for every pair, without a Python loop."""
    ends = np.cumsum(counts)
    return np.repeat(starts - (ends - counts), counts) + np.arange(ends[-1] if len(ends) else 0)


def _coalesced(
    file_ids: np.ndarray, offsets: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge every row range that continues the previous one in the same file; also say where each lands.

    >>> [a.tolist() for a in _coalesced(np.array([0, 0, 1]), np.array([10, 15, 15]), np.array([5, 2, 3]))]
    [[0, 1], [10, 15], [7, 3], [0, 7]]
    """
    destinations = np.cumsum(counts) - counts
    continues = np.zeros(len(counts), dtype=bool)
    continues[1:] = (file_ids[1:] == file_ids[:-1]) & (offsets[1:] == offsets[:-1] + counts[:-1])
    heads = np.flatnonzero(~continues)
    merged = np.add.reduceat(counts, heads) if len(heads) else counts
    return file_ids[heads], offsets[heads], merged, destinations[heads]


def _runs_by_file(file_ids: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The runs' order by file and row, and that order cut into one piece per file.

    >>> _runs_by_file(np.array([1, 0, 1]), np.array([0, 5, 2]))
    (array([1, 0, 2]), [array([1]), array([0, 2])])
    """
    by_file = np.lexsort((offsets, file_ids))
    return by_file, np.split(by_file, np.flatnonzero(np.diff(file_ids[by_file])) + 1) if len(by_file) else []


def _landing(destinations: np.ndarray, counts: np.ndarray) -> slice | np.ndarray:
    """Where runs' rows land: one slice when each run follows the previous one, as a compacted file's labels do.

    >>> _landing(np.array([4, 6]), np.array([2, 3])), _landing(np.array([4, 9]), np.array([2, 1]))
    (slice(4, 9, None), array([4, 5, 9]))
    """
    if np.array_equal(destinations[1:], destinations[:-1] + counts[:-1]):
        return slice(int(destinations[0]), int(destinations[-1] + counts[-1]))
    return _row_ranges(destinations, counts)


def _run_in_groups(offset: int, count: int, group_size: int, destination: int) -> tuple[list[int], slice, slice]:
    """The row groups one run of rows spans, its rows among theirs, and where they land.

    >>> _run_in_groups(offset=250, count=100, group_size=100, destination=7)
    ([2, 3], slice(50, 150, None), slice(7, 107, None))
    """
    first = offset // group_size
    start = offset - first * group_size
    groups = list(range(first, (offset + count - 1) // group_size + 1))
    return groups, slice(start, start + count), slice(destination, destination + count)


def _groups_of_runs(offsets: np.ndarray, counts: np.ndarray, group_size: int) -> tuple[list[int], np.ndarray]:
    """The row groups a file's runs span, and where each run starts among those groups' rows once read.

    >>> _groups_of_runs(np.array([5, 250]), np.array([10, 20]), group_size=100)
    ([0, 2], array([  5, 150]))
    """
    first_group = offsets // group_size
    last_group = (offsets + counts - 1) // group_size
    groups = np.unique(_row_ranges(first_group, last_group - first_group + 1))
    # Every group read before the last one of a file is full, so rank * size locates a run in them.
    return groups.tolist(), np.searchsorted(groups, first_group) * group_size + offsets % group_size


class PointFiles:
    """Reads row runs out of a store's point files, keeping recently used files open.

    ``files`` maps each ``file_id`` to its ``(path, row_group_size, byte_size)`` as the
    index's ``files`` table lists them; each path's extension says its format.
    ``verify_checksums=False`` only serves to measure what verifying Parquet page
    checksums costs: a damaged page then reads as wrong points.

    Points come back in a new, writable array whatever the format: from an Arrow
    file on local disk the rows are a view of the mapped file, copied once
    (~3 µs for 1,000 points of 3 int32), so a caller never holds a read-only array or one
    that pins a file that ``collect_garbage`` may remove.
    """

    def __init__(
        self,
        storage: Storage,
        schema: Schema,
        files: dict[int, tuple[str, int, int]],
        *,
        verify_checksums: bool = True,
        shared: tuple[str, str] | None = None,
    ):
        self.storage = storage
        # (store key, index version): files opened are kept for the process under it (``_immutables``), so a
        # later reader of the same index version finds their footers parsed.
        self.shared = shared
        self.schema = schema
        self.files = files
        self.verify_checksums = verify_checksums
        # Each open file with the lock its reads take: a file object (a bucket's above all) keeps a position,
        # so one thread reads a file at a time, and threads reading different files run side by side.
        self._open: OrderedDict[int, tuple[Any, threading.Lock]] = OrderedDict()
        self._orders: dict[int, dict[str, Any] | None] = {}
        self._lock = threading.Lock()  # over the two dicts

    def alongside(self, call: Callable[[], Any]) -> Any:
        """``call()``, with every file opened at the same time when there are few, none open yet, on a bucket.

        A compacted store has a few files, and a label's rows are in one of them: the directory page that says
        which (``call``) and the footers arrive in the same round trip, so the rows follow in the next.

        Example: ``runs = point_files.alongside(lambda: directory.lookup([label]))``.
        """
        with self._lock:
            guess = self.storage.concurrent and not self._open and len(self.files) <= _GUESSED_FILES
        if not guess:
            return call()
        return self.storage.fetch_together(
            [call, *(functools.partial(self._guess, file_id) for file_id in self.files)]
        )[0]

    def _guess(self, file_id: int) -> None:
        # Only a guess: the read that needs this file opens it again, and says what is wrong with it.
        with contextlib.suppress(Exception):
            self._opened(file_id, self.files[file_id][0], self.files[file_id][2])

    def close(self) -> None:
        with self._lock:
            self._open.clear()
            self._orders.clear()

    def read_rows(self, file_ids: np.ndarray, offsets: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Gather row ranges of the store's files, as ``point_index`` rows name them, into one (N, D) array.

        The ranges come back in the given order; only the row groups holding them are read.

        Example::

            rows = query.sql("SELECT file_id, row_offset, point_count FROM point_index WHERE block_id = '3_1_4'",
                             output="numpy")
            points = point_files.read_rows(rows["file_id"], rows["row_offset"], rows["point_count"])
        """
        if len(counts) == 1:  # one run, as a compacted label is: no coalescing, no grouping
            return self._read_run(int(file_ids[0]), int(offsets[0]), int(counts[0]))
        points = np.empty((int(counts.sum()), self.schema.dimensions), dtype=self.schema.dtype)
        file_ids, offsets, counts, destinations = _coalesced(file_ids, offsets, counts)

        def gather(runs: np.ndarray) -> None:
            # The row indices are made inside the call: made ahead for every file, they would all be held at once
            # (16 bytes a row beside the points' own, +30 % peak memory on a bulk read of 3 float64 columns).
            file_id = int(file_ids[runs[0]])
            path, group_size, byte_size = self.files[file_id]
            if len(runs) == 1:  # a label's rows in a file are adjacent, so slices do
                groups, take, put = _run_in_groups(
                    int(offsets[runs[0]]), int(counts[runs[0]]), group_size, int(destinations[runs[0]])
                )
            else:
                groups, sources = _groups_of_runs(offsets[runs], counts[runs], group_size)
                if counts[runs].sum() >= _SLICED_RUN_ROWS * len(runs):
                    rows = self._read_groups(file_id, path, byte_size, groups)
                    rows.copy_ranges(sources, counts[runs], points, destinations[runs])
                    return
                take = _row_ranges(sources, counts[runs])
                put = _landing(destinations[runs], counts[runs])
            self._gather(file_id, path, byte_size, groups, take, points, put)

        # Each file's runs in row order, so its rows are taken front to back, batch by batch (see the formats).
        # Files land in separate rows of ``points``: a bucket reads them all at once (one round trip, not one
        # a file, for a label as ingested), a local disk one after another.
        self.storage.fetch_together([functools.partial(gather, runs) for runs in _runs_by_file(file_ids, offsets)[1]])
        return points

    def _read_run(self, file_id: int, offset: int, count: int) -> np.ndarray:
        points = np.empty((count, self.schema.dimensions), dtype=self.schema.dtype)
        if count:
            path, group_size, byte_size = self.files[file_id]
            groups, take, put = _run_in_groups(offset, count, group_size, 0)
            self._gather(file_id, path, byte_size, groups, take, points, put)
        return points

    def read_runs_where(
        self,
        file_ids: np.ndarray,
        offsets: np.ndarray,
        counts: np.ndarray,
        keep: Callable[[list[np.ndarray]], np.ndarray],
        whole: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The rows of these runs that ``keep`` accepts, as a (D, N) array of the schema's columns, and how many of each run's.

        ``keep`` gets the columns of the rows of the runs not marked in ``whole``
        (runs known to pass entirely, kept untested) and answers a boolean mask
        over them. The rows come back in the runs' order, as :meth:`read_rows`
        gives them; only the rows kept are copied to the result, each column
        contiguous (``pa.array(columns[j])`` copies nothing).

        Example::

            columns, kept = point_files.read_runs_where(file_ids, offsets, counts, lambda columns: columns[2] > 0)
        """
        kept = np.zeros(len(counts), dtype=np.int64)
        by_file, files = _runs_by_file(file_ids, offsets)
        selections = self._selections(file_ids, offsets, counts, keep, whole, files)
        if np.any(by_file[1:] < by_file[:-1]):  # files interleave in the runs' order: land rows once all are counted
            held = []
            for file_id, runs, selection in selections:
                kept[runs] = selection.kept
                held.append((file_id, selection))
            columns = np.empty((self.schema.dimensions, int(kept.sum())), dtype=self.schema.dtype)
            destinations = np.cumsum(kept) - kept
            for file_id, selection in held:
                with self._reading(file_id, self.files[file_id][0]):
                    selection.copy_to(columns, destinations)
            return columns, kept
        # Each file's rows follow the previous file's (a compacted store's labels): copy them as soon as they are
        # selected, so that one file's row groups are held at a time, not all of them. The buffer has room for
        # every row of the runs; the pages of the room left over are never written, so never allocated.
        room = np.empty((self.schema.dimensions, int(counts.sum())), dtype=self.schema.dtype)
        destinations, filled = np.zeros(len(counts), dtype=np.int64), 0
        for file_id, runs, selection in selections:
            kept[runs] = selection.kept
            destinations[runs] = filled + np.cumsum(selection.kept) - selection.kept
            filled += int(selection.kept.sum())
            with self._reading(file_id, self.files[file_id][0]):
                selection.copy_to(room, destinations)
        return room[:, :filled], kept

    def count_runs_where(
        self,
        file_ids: np.ndarray,
        offsets: np.ndarray,
        counts: np.ndarray,
        keep: Callable[[list[np.ndarray]], np.ndarray],
    ) -> np.ndarray:
        """How many rows of each run ``keep`` accepts (see :meth:`read_runs_where`).

        Example: ``point_files.count_runs_where(file_ids, offsets, counts, lambda columns: columns[2] > 0)``.
        """
        kept = np.zeros(len(counts), dtype=np.int64)
        files = _runs_by_file(file_ids, offsets)[1]
        for _, runs, selection in self._selections(file_ids, offsets, counts, keep, None, files):
            kept[runs] = selection.kept
        return kept

    def _selections(
        self,
        file_ids: np.ndarray,
        offsets: np.ndarray,
        counts: np.ndarray,
        keep: Callable[[list[np.ndarray]], np.ndarray],
        whole: np.ndarray | None,
        files: list[np.ndarray],
    ) -> Iterator[tuple[int, np.ndarray, _selection.Selection]]:
        """Each file's runs (``files``: their positions, file by file) through ``keep``, all but the ``whole`` ones."""
        whole = np.zeros(len(counts), dtype=bool) if whole is None else np.asarray(whole, dtype=bool)
        # One file after the other: Arrow already decodes a file's columns on threads. A thread per file gained
        # nothing on 2 cores (37.0 vs 36.7 M points/s, 10^8-point store), nor did decoding the next file on a
        # thread while this one is tested (31.1 vs 31.3 M points/s, medians of 3 runs, load 2).
        for runs in files:
            file_id = int(file_ids[runs[0]])
            path, group_size, byte_size = self.files[file_id]
            groups, starts = _groups_of_runs(offsets[runs], counts[runs], group_size)
            rows = self._read_groups(file_id, path, byte_size, groups)
            with self._reading(file_id, path):
                selection = _selection.select(
                    rows, self.schema.dtype, self.schema.dimensions, starts, counts[runs], whole[runs], runs, keep
                )
            yield file_id, runs, selection

    def iter_rows(
        self, file_ids: np.ndarray, offsets: np.ndarray, counts: np.ndarray, chunk_size: int
    ) -> Iterator[np.ndarray]:
        """The rows :meth:`read_rows` would return, as consecutive (chunk_size, D) arrays (the last one shorter).

        Memory holds about one chunk however many rows the runs hold: each chunk
        is allocated once and filled in place from pieces of a few whole row
        groups (at most ``_PIECE_ROWS`` rows, or one group), so neither a list of
        pieces nor their concatenation ever sits beside it.
        """
        remaining = int(counts.sum())
        chunk, filled = None, 0
        for file_id, offset, count in zip(*_coalesced(file_ids, offsets, counts)[:3], strict=True):
            group_size = self.files[int(file_id)][1]
            step = max(1, min(chunk_size, _PIECE_ROWS) // group_size) * group_size
            # Pieces end on row group borders, so no row group is decoded twice.
            end = offset + count
            borders = np.concatenate([[offset], np.arange(offset - offset % step + step, end, step), [end]])
            for start, stop in zip(borders[:-1].tolist(), borders[1:].tolist(), strict=True):
                piece = self.read_rows(np.array([file_id]), np.array([start]), np.array([stop - start]))
                used = 0
                while used < len(piece):
                    if chunk is None:
                        chunk, filled = np.empty((min(chunk_size, remaining), piece.shape[1]), piece.dtype), 0
                    moved = min(len(piece) - used, len(chunk) - filled)
                    chunk[filled : filled + moved] = piece[used : used + moved]
                    used, filled, remaining = used + moved, filled + moved, remaining - moved
                    if filled == len(chunk):
                        yield chunk
                        chunk = None

    def row_order(self, file_id: int) -> dict[str, Any] | None:
        """The sample order a file declares in its footer or schema (see ``sampling``), or None."""
        file_id = int(file_id)
        with self._lock:
            if file_id in self._orders:  # parsed once a file: a dataset's first pass asks for every label
                return self._orders[file_id]
        path, _, byte_size = self.files[file_id]
        opened, lock = self._opened(file_id, path, byte_size)
        with lock:
            order = read_marker(opened.metadata)
        with self._lock:
            self._orders[file_id] = order
        return order

    def _opened(self, file_id: int, path: str, byte_size: int) -> tuple[Any, threading.Lock]:
        """The file, opened in its format (a ``ParquetPointFile`` or an ``ArrowPointFile``) and kept, with its lock."""
        with self._lock:
            kept = self._open.get(file_id)
            if kept is not None:
                self._open.move_to_end(file_id)
                return kept
        key = self._shared_key(path, byte_size)
        kept = None if key is None else IMMUTABLES.get(key)
        if kept is None:
            opened, source = self._open_file(path, byte_size)
            kept = opened, threading.Lock()
            if key is not None:
                # A bucket's file holds the bytes read at opening (its tail, or all of a small file) besides its footer.
                held = max(opened.footer_bytes, _KEPT_FILE_BYTES) + getattr(source, "kept_bytes", 0)
                kept = IMMUTABLES.keep(key, kept, held)
        with self._lock:  # another thread may have opened it meanwhile: keep one
            kept = self._open.setdefault(file_id, kept)
            while len(self._open) > _OPEN_FILES_KEPT:
                self._open.popitem(last=False)
        return kept

    def _open_file(self, path: str, byte_size: int) -> tuple[Any, Any]:
        """The file opened in its format, and the source it reads from (a local path or a bucket's file)."""
        try:  # outside the lock: on a bucket, opening reads the footer
            source = self.storage.open_input(path, byte_size)
            opened = _OPENERS[layout.payload_of(path)](
                source, self.schema.columns, verify_checksums=self.verify_checksums
            )
        except (StorageAccessError, StorageUnavailableError):
            raise  # the store is fine, reaching it is not
        except (OSError, pa.ArrowException) as error:
            raise self._damaged(path, error) from error
        return opened, source

    def _damaged(self, path: str, error: Exception) -> DataFileError:
        return DataFileError(
            f"cannot read {self.storage.describe(path)}, which the index lists: {error}. "
            f"The store is damaged: {layout.rewrite_advice(path)}"
        )

    def _gather(
        self,
        file_id: int,
        path: str,
        byte_size: int,
        groups: list[int],
        take: slice | np.ndarray,
        points: np.ndarray,
        put: slice | np.ndarray,
    ) -> None:
        with self._reading(file_id, path):
            opened, lock = self._opened(file_id, path, byte_size)
            with lock:
                opened.gather(groups, take, points, put)

    def _read_groups(self, file_id: int, path: str, byte_size: int, groups: list[int]) -> Any:
        """Row groups ``groups`` of a file, read in its format: ``.copy(take, points, put)`` copies rows out of them."""
        with self._reading(file_id, path):
            opened, lock = self._opened(file_id, path, byte_size)
            with lock:
                return opened.read_groups(groups)

    @contextlib.contextmanager
    def _reading(self, file_id: int, path: str) -> Iterator[None]:
        """Turn a failed read into DataFileError naming the file (and forget the file) unless the storage failed."""
        try:
            yield
        except (StorageAccessError, StorageUnavailableError):
            self._forget(file_id)
            raise  # the store is fine, reaching it is not
        # A file with fewer groups or rows than the index says: an IndexError, or a ValueError as rows land.
        except (OSError, pa.ArrowException, IndexError, ValueError) as error:
            self._forget(file_id)
            raise self._damaged(path, error) from error

    def _forget(self, file_id: int) -> None:
        """Let the next read open the file anew, in this reader and in the process's cache."""
        with self._lock:
            self._open.pop(file_id, None)
        if file_id in self.files:
            path, _, byte_size = self.files[file_id]
            key = self._shared_key(path, byte_size)
            if key is not None:
                IMMUTABLES.forget(key)

    def _shared_key(self, path: str, byte_size: int) -> tuple | None:
        """The file's key in the process's cache, None when this reader shares nothing."""
        return (
            None if self.shared is None else version_key(*self.shared, "file", path, byte_size, self.verify_checksums)
        )
