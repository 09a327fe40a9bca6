"""The Arrow IPC point file: a label's rows are a slice of one flat array, memory-mapped on local disk.

The IPC *file* format (random access to each record batch through the footer),
one record batch per ``row_group_size`` rows, three columns:

- ``label``: run-end encoded uint64 (one run per label: a few bytes a label, not 8 a point),
- ``block_id``: run-end encoded, string or int64 as the schema says,
- ``points``: ``fixed_size_list<D>`` of the schema dtype, so a batch's values are
  one flat (rows × D) buffer; the schema's column names are in the metadata
  (``pocaduck.columns``).

Buffers are uncompressed by default: a local file is then memory-mapped and a
batch's points are a zero-copy numpy view of the page cache (decoding a
batch is ~4 µs of metadata). LZ4 or ZSTD buffers trade that for size: each
batch read decompresses the whole batch. The file has no page checksums
(Parquet's do); ``verify --deep`` checks the file checksum the index records.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from ..layout import Schema
from . import _pieces

CODECS = "None or 'none' (uncompressed, the default), 'lz4' or 'zstd'"
_CODECS = {"none": None, "lz4": "lz4", "zstd": "zstd"}
_COLUMNS_KEY = b"pocaduck.columns"


def check_codec(compression: str) -> bool:
    return compression.lower() in _CODECS


def write(
    temp: str,
    schema: Schema,
    chunk_labels: np.ndarray,
    chunk_blocks: pa.Array,
    counts: np.ndarray,
    values: np.ndarray,
    row_group_size: int,
    compression: str,
    metadata: dict[bytes, bytes] | None,
) -> None:
    """Write the chunks (``counts[i]`` rows each) as an Arrow IPC file at ``temp``, a record batch per
    ``row_group_size`` rows."""
    ends = pa.array(np.cumsum(counts), pa.int64())
    labels = pa.RunEndEncodedArray.from_arrays(ends, pa.array(chunk_labels, pa.uint64()))
    blocks = pa.RunEndEncodedArray.from_arrays(ends, chunk_blocks)
    # (D, N) columns to one row-major (N, D) buffer: the transposing copy is the write's only pass over the points.
    flat = pa.array(np.ascontiguousarray(values.T).reshape(-1))
    points = pa.FixedSizeListArray.from_arrays(flat, len(schema.columns))
    arrow_schema = pa.schema(
        [("label", labels.type), ("block_id", blocks.type), ("points", points.type)],
        metadata={**(metadata or {}), _COLUMNS_KEY: json.dumps(list(schema.columns)).encode()},
    )
    options = pa.ipc.IpcWriteOptions(compression=_CODECS[compression.lower()])
    with pa.OSFile(temp, "wb") as sink, pa.ipc.new_file(sink, arrow_schema, options=options) as writer:
        for start in range(0, len(points), row_group_size):
            columns = [column.slice(start, row_group_size) for column in (labels, blocks, points)]
            writer.write_batch(pa.record_batch(columns, schema=arrow_schema))


class ArrowPointFile:
    """An opened Arrow IPC point file: the footer read once; a local file memory-mapped, a remote one read by range."""

    def __init__(self, source: Any, columns: tuple[str, ...], *, verify_checksums: bool):
        del verify_checksums  # the IPC format has none: see the module docstring
        if isinstance(source, str):
            source = pa.memory_map(source)
            self._map_start = source.read_buffer(1).address if source.size() else 0
            self._map_end = self._map_start + source.size()
            source.seek(0)
        else:
            self._map_start = self._map_end = 0
        self._reader = pa.ipc.open_file(source)
        self._columns = list(columns)
        self._dimensions = len(columns)
        self._views: dict[int, np.ndarray] = {}

    @property
    def metadata(self) -> dict[bytes, bytes] | None:
        return self._reader.schema.metadata

    @property
    def footer_bytes(self) -> int:
        """About what the parsed footer holds in memory: a block (offset, lengths) per record batch, and the schema."""
        return 1024 + 64 * self._reader.num_record_batches

    def _points(self, batch: int) -> np.ndarray:
        """A batch's points as (rows, D): a read-only view of the mapped file when it is local and uncompressed.

        Such a view is kept: it is a piece of the map, which stays open with the file anyway, and making it
        costs ~6 µs, every batch of a file in a bulk read. A decompressed or downloaded batch is made anew.
        """
        points = self._views.get(batch)
        if points is None:
            points = self._reader.get_batch(batch).column(2).values.to_numpy().reshape(-1, self._dimensions)
            if self._map_start <= points.ctypes.data < self._map_end:
                self._views[batch] = points
        return points

    def gather(self, groups: list[int], take: slice, points: np.ndarray, put: slice) -> None:
        """Copy rows ``take`` of batches ``groups`` (counted from the first one's first row) to ``points[put]``."""
        self.read_groups(groups).copy(take, points, put)

    def read_groups(self, groups: list[int]) -> _Batches:
        """Batches ``groups``, as views of the mapped file where it is local and uncompressed: nothing is copied yet."""
        return _Batches([self._points(group) for group in groups])


class _Batches:
    """A few consecutive record batches' points, rows counted from the first one's first row."""

    def __init__(self, views: list[np.ndarray]):
        self._views = views
        self._borders = np.cumsum([0, *map(len, views)])

    def copy_ranges(
        self, starts: np.ndarray, lengths: np.ndarray, points: np.ndarray, destinations: np.ndarray
    ) -> None:
        """Copy rows ``starts[i]`` onwards, ``lengths[i]`` of them, to ``points[destinations[i]:]``, as slices.

        A range crossing batches is a slice of each; all of them land in one copy call when they follow on.
        """
        views = self._views
        batches, lows, highs, landing = _pieces.split_at(self._borders, starts, lengths, destinations)
        pieces = [
            views[batch][low:high]
            for batch, low, high in zip(batches.tolist(), lows.tolist(), highs.tolist(), strict=True)
        ]
        _pieces.land(pieces, points, landing, highs - lows)

    def copy(self, take: slice, points: np.ndarray, put: slice) -> None:
        """Copy the rows of slice ``take`` to ``points[put]`` (``points`` may be a transposed view)."""
        if len(self._views) == 1:  # one label's usual case: one slice
            points[put] = self._views[0][take]
            return
        # A run over several batches lands a slice of each, with no concatenation of the batches first (and no
        # numpy planning, which costs more than the loop for the two batches a small label may straddle).
        first_row, landed = 0, put.start
        for view in self._views:
            low, high = max(take.start - first_row, 0), min(take.stop - first_row, len(view))
            if high > low:
                points[landed : landed + high - low] = view[low:high]
                landed += high - low
            first_row += len(view)
        if landed != put.stop:
            raise IndexError(f"rows {take.start} to {take.stop} asked of batches which hold {first_row}")


def count_rows(data: bytes) -> int:
    """Read and fully validate every record batch of a whole file's bytes; return its row count."""
    reader = pa.ipc.open_file(pa.BufferReader(data))
    rows = 0
    for batch in range(reader.num_record_batches):
        record_batch = reader.get_batch(batch)
        record_batch.validate(full=True)
        rows += record_batch.num_rows
    return rows
