"""The Parquet point file: one column per schema column, label and block id dictionary-encoded, page checksums."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..layout import Schema
from . import _pieces

CODECS = "'lz4' (the default), 'zstd', 'snappy', 'gzip', 'brotli' or 'none'"


def check_codec(compression: str) -> bool:
    """True when pyarrow's Parquet writer takes ``compression``: its codecs depend on how it was built."""
    try:
        pq.write_table(pa.table({"probe": [0]}), pa.BufferOutputStream(), compression=compression)
    except (pa.ArrowException, ValueError):
        return False
    return True


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
    """Write the chunks (``counts[i]`` rows each) as a Parquet file at ``temp``, a row group per ``row_group_size`` rows."""
    chunk_of_row = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    string_blocks = pa.types.is_string(chunk_blocks.type)
    block_type = pa.dictionary(pa.int32(), pa.string()) if string_blocks else chunk_blocks.type
    arrow_schema = pa.schema(
        [
            ("label", pa.uint64()),
            ("block_id", block_type),
            *((name, pa.from_numpy_dtype(schema.dtype)) for name in schema.columns),
        ],
        metadata=metadata,
    )
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


class ParquetPointFile:
    """An opened Parquet point file: its footer read once, row groups decoded on demand."""

    def __init__(self, source: Any, columns: tuple[str, ...], *, verify_checksums: bool):
        # Pre-buffering coalesces a row group's column chunks into one request: worth a round
        # trip to an object store, a quarter of the read time lost on a local file.
        self._file = pq.ParquetFile(
            source, pre_buffer=not isinstance(source, str), page_checksum_verification=verify_checksums
        )
        self._columns = list(columns)

    @property
    def metadata(self) -> dict[bytes, bytes] | None:
        return self._file.schema_arrow.metadata

    @property
    def footer_bytes(self) -> int:
        """The footer's size as stored: its parsed form is of the same order."""
        return self._file.metadata.serialized_size

    def gather(self, groups: list[int], take: slice, points: np.ndarray, put: slice) -> None:
        """Copy rows ``take`` of row groups ``groups`` (counted from the first one's first row) to ``points[put]``."""
        self.read_groups(groups).copy(take, points, put)

    def read_groups(self, groups: list[int]) -> _Decoded:
        """Row groups ``groups``, decoded."""
        # Decoding columns on threads pays from two row groups on; for one it costs more than it saves.
        table = self._file.read_row_groups(groups, columns=self._columns, use_threads=len(groups) > 1)
        return _Decoded([table.column(name).to_numpy() for name in self._columns])


class _Decoded:
    """A few consecutive row groups decoded: one numpy array per column, rows counted from the first group's first."""

    def __init__(self, columns: list[np.ndarray]):
        self._columns = columns

    def copy(self, take: slice, points: np.ndarray, put: slice) -> None:
        """Copy the rows of slice ``take`` to ``points[put]`` (``points`` may be a transposed view)."""
        for j, column in enumerate(self._columns):
            points[put, j] = column[take]

    def copy_ranges(
        self, starts: np.ndarray, lengths: np.ndarray, points: np.ndarray, destinations: np.ndarray
    ) -> None:
        """Copy rows ``starts[i]`` onwards, ``lengths[i]`` of them, to ``points[destinations[i]:]``, as slices."""
        ends = starts + lengths
        if np.any((ends > len(self._columns[0])) & (lengths > 0)):  # an empty range asks no row
            raise IndexError(f"rows up to {int(ends[lengths > 0].max())} asked of {len(self._columns[0])} decoded")
        bounds = list(zip(starts.tolist(), ends.tolist(), strict=True))
        for j, column in enumerate(self._columns):
            _pieces.land([column[low:high] for low, high in bounds], points[:, j], destinations, lengths)


def count_rows(data: bytes) -> int:
    """Decode every row group of a whole file's bytes, page checksums verified; return its row count."""
    parquet = pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True)
    for group in range(parquet.num_row_groups):
        parquet.read_row_group(group)
    return parquet.metadata.num_rows
