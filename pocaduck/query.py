"""Label queries: the index says which rows of which files hold a label; only those are read.

The unified index is attached read-only with external access disabled, so
neither our queries nor SQL typed by a user can touch the store. DuckDB still
lets such a connection read its temp directory and report its own settings, so
``Query.sql`` also parses each statement and accepts only SELECTs over the
index tables. Point rows are read with pyarrow, row group by row group, never
scanning files or row groups that do not hold the label.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import layout
from ._sql import lock_down, private_connection, run_select, tables_of
from ._timing import Timing, print_timing_info
from .config import StorageConfig, as_config
from .errors import (
    DamagedStoreError,
    DataFileError,
    InvalidArgumentError,
    InvalidBlockIdError,
    SQLError,
    StorageAccessError,
    StorageUnavailableError,
    StoreNotConsolidatedError,
    StoreNotFoundError,
)
from .index import attach_read_only, label_summary
from .ingest import block_id_type_of, check_label
from .storage import open_storage

Output = Literal["numpy", "arrow", "pandas"]
_CATALOG = "store_index"  # the unified index, attached read-only
_OPEN_FILES_KEPT = 256


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


def _one_label(label: object) -> int:
    """A label, also given as a 0-d integer array (what indexing a numpy array with ``[()]`` or a reduction gives)."""
    if isinstance(label, np.ndarray) and label.ndim == 0:
        label = label[()]
    return check_label(label)


class Query:
    """Read points and summaries of labels from a consolidated store.

    >>> import tempfile
    >>> from pocaduck import Ingestor
    >>> store = tempfile.mkdtemp()
    >>> with Ingestor(store, worker_id=0) as ingestor:
    ...     ingestor.write(5, "b0", np.array([[1.5, 2.0, 3.0]]))
    ...     ingestor.write(5, "b1", np.array([[4.0, 5.0, 6.25]]))
    >>> _ = Ingestor.consolidate_indexes(store)
    >>> with Query(store) as query:
    ...     query.get_points(5).tolist(), query.get_blocks_for_label(5), query.get_point_count(5)
    ([[1.5, 2.0, 3.0], [4.0, 5.0, 6.25]], ['b0', 'b1'], 2)
    """

    def __new__(cls, storage_config: StorageConfig | str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(storage_config, StorageConfig | str | os.PathLike):
            raise InvalidArgumentError(
                f"Query expects a store path, a URL or a StorageConfig, got {type(storage_config).__name__} "
                f"{storage_config!r}"
            )
        # A store written by the original pocaduck (its own index files, no manifest) is read,
        # read-only and answering as the original did, by LegacyQuery.
        if cls is Query:
            from .legacy import LegacyQuery, is_legacy_store

            if is_legacy_store(open_storage(as_config(storage_config))):
                return LegacyQuery(storage_config, *args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        storage_config: StorageConfig | str | os.PathLike,
        index_path: str | None = None,
        threads: int | None = None,
        cache_size: int = 10,
        *,
        verify_checksums: bool = True,
    ):
        self.storage_config = as_config(storage_config)
        self.cache_size = cache_size
        self.threads = threads or os.cpu_count() or 1
        # Off only to measure what verifying Parquet page checksums costs: a damaged page then reads as wrong points.
        self.verify_checksums = verify_checksums
        self._storage = open_storage(self.storage_config)
        if not self._storage.root_exists():
            raise StoreNotFoundError(f"no store at {self.storage_config.base_path}: the path does not exist")
        self.schema = layout.read_schema(self._storage)
        if index_path is None:
            if not self._storage.exists(layout.UNIFIED_INDEX):
                if self.schema is None and not self._storage.listdir(layout.WORKERS):
                    raise StoreNotFoundError(f"{self.storage_config.base_path} holds no pocaduck store")
                raise StoreNotConsolidatedError(
                    f"{self.storage_config.base_path} has not been consolidated yet: run "
                    f"Ingestor.consolidate_indexes(config) or `pocaduck consolidate STORE` after the workers finish"
                )
            index_path = self._storage.local_copy(layout.UNIFIED_INDEX)
        if self.schema is None:
            raise StoreNotFoundError(f"{self.storage_config.base_path} has no manifest ({layout.MANIFEST})")
        self.index_path = index_path
        self.db_connection = None
        with self._index_read():
            self.db_connection = self._connect(index_path)
            self._files = {
                file_id: (path, row_group_size, byte_size)
                for file_id, path, row_group_size, byte_size in self.db_connection.execute(
                    "SELECT file_id, path, row_group_size, byte_size FROM files"
                ).fetchall()
            }
            self._tables = tables_of(self.db_connection, _CATALOG)
        self._open_files: OrderedDict[int, pq.ParquetFile] = OrderedDict()
        self._points_cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.using_optimized_data = False

    def _connect(self, index_path: str) -> duckdb.DuckDBPyConnection:
        con = private_connection(self.threads)
        attach_read_only(con, index_path, _CATALOG)
        con.execute(f"USE {_CATALOG}")
        lock_down(con)
        return con

    @contextmanager
    def _index_read(self) -> Iterator[None]:
        """Turn DuckDB's read errors on the index file into one that says how to rebuild it."""
        try:
            yield
        except (duckdb.IOException, duckdb.SerializationException) as error:
            raise DamagedStoreError(
                f"the index {self.index_path} is damaged or truncated ({error}); rebuild it with "
                f"`pocaduck consolidate {self.storage_config.base_path}`"
            ) from error

    def __enter__(self) -> Query:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Release the index connection, open files and the cache."""
        self._points_cache.clear()
        self._open_files.clear()
        if self.db_connection is not None:
            self.db_connection.close()
            self.db_connection = None

    # -- label lookups ---------------------------------------------------

    def get_labels(self) -> np.ndarray:
        """All labels in the store, sorted, as uint64."""
        with self._index_read():
            labels = self.db_connection.execute("SELECT label FROM labels ORDER BY label").fetchnumpy()["label"]
        return labels.astype(np.uint64)

    def get_point_count(self, label: int, timing: bool = False) -> int | tuple[int, dict]:
        """Number of points stored for ``label`` (0 when unknown)."""
        clock = Timing(label=_one_label(label))
        with clock.phase("index_lookup_time"), self._index_read():
            row = self.db_connection.execute(
                "SELECT point_count FROM labels WHERE label = ?::UBIGINT", [clock["label"]]
            ).fetchone()
        return clock.finish(int(row[0]) if row else 0, timing)

    def get_blocks_for_label(self, label: int, timing: bool = False) -> list | tuple[list, dict]:
        """Sorted ids of the blocks holding ``label``'s points."""
        clock = Timing(label=_one_label(label))
        with clock.phase("index_lookup_time"), self._index_read():
            rows = self.db_connection.execute(
                "SELECT DISTINCT block_id FROM point_index WHERE label = ?::UBIGINT ORDER BY block_id",
                [clock["label"]],
            ).fetchall()
        blocks = [block_id for (block_id,) in rows]
        clock["blocks_found"] = len(blocks)
        return clock.finish(blocks, timing)

    def get_label_summary(self, label: int) -> dict[str, Any]:
        """Point count, block count, file count and bounding box of ``label``.

        An unknown label has zero counts and no bounding box (``None`` values).
        """
        with self._index_read():
            return label_summary(self.db_connection, _one_label(label))

    # -- points ----------------------------------------------------------

    def get_points(
        self,
        label: int | Iterable[int],
        use_cache: bool = True,
        timing: bool = False,
        *,
        blocks: Sequence[str | int] | str | int | None = None,
        output: Output = "numpy",
    ) -> Any:
        """All points of a label, assembled across every block, as an (N, D) array.

        Give several labels to get them in one call: a dict ``{label: array}``
        for numpy output, or one table with a ``label`` column for ``"arrow"``
        and ``"pandas"``; a 0-d integer array is one label. ``blocks`` restricts
        the result to those blocks (a single id is one block) and must match the
        store's block id type. An unknown label gives an empty (0, D) array.

        Example: ``query.get_points([5, 6], output="pandas")``.
        """
        if output not in ("numpy", "arrow", "pandas"):
            raise InvalidArgumentError(f"output must be 'numpy', 'arrow' or 'pandas', not {output!r}")
        single = not isinstance(label, Iterable) or (isinstance(label, np.ndarray) and label.ndim == 0)
        labels = [_one_label(label)] if single else [check_label(each) for each in label]
        blocks = None if blocks is None else self._block_ids(blocks)
        clock = Timing(label=labels[0] if single else labels, cache_hit=False, files_queried=0, points_returned=0)
        clock["using_optimized_data"] = self.using_optimized_data
        cacheable = single and use_cache and self.cache_size > 0 and blocks is None and output == "numpy"
        if cacheable and labels[0] in self._points_cache:
            self._points_cache.move_to_end(labels[0])
            points = self._points_cache[labels[0]].copy()
            clock.update(cache_hit=True, points_returned=len(points))
            return clock.finish(points, timing)

        with clock.phase("index_lookup_time"):
            rows = self._lookup(labels, blocks)
        with clock.phase("data_read_time"):
            points = self.read_rows(rows["file_id"], rows["row_offset"], rows["point_count"])
        clock.update(files_queried=len(np.unique(rows["file_id"])), points_returned=len(points))
        point_labels = np.repeat(rows["label"], rows["point_count"])
        result = self._shape_result(labels, single, point_labels, points, output)
        if cacheable:
            self._remember(labels[0], result)
        return clock.finish(result, timing)

    def _block_ids(self, blocks: Sequence[str | int] | str | int) -> list[str | int]:
        """Block ids as a list, refused when they cannot match: a block of the wrong type would select nothing."""
        if isinstance(blocks, str | int | np.integer):
            blocks = [blocks]
        elif not isinstance(blocks, Iterable):
            raise InvalidBlockIdError(f"blocks must be a block id or a list of them, got {type(blocks).__name__}")
        wanted = self.schema.block_id_type
        checked = []
        for block in blocks:
            block, kind = block_id_type_of(block)
            if kind != wanted:
                raise InvalidBlockIdError(
                    f"this store's block ids are {'strings' if wanted == 'string' else 'int64 integers'}, "
                    f"but blocks holds {block!r}"
                )
            checked.append(block)
        return checked

    def _lookup(self, labels: list[int], blocks: list[str | int] | None) -> dict[str, np.ndarray]:
        # The explicit UBIGINT casts let DuckDB prune by the label zone maps; an untyped
        # parameter is compared after a cast and scans the whole table (76 ms vs 0.4 ms on 10M rows).
        if len(labels) == 1:
            sql = "SELECT label, file_id, row_offset, point_count FROM point_index WHERE label = ?::UBIGINT"
            params: list[Any] = [labels[0]]
        else:
            sql = "SELECT label, file_id, row_offset, point_count FROM point_index WHERE label = ANY(?::UBIGINT[])"
            params = [labels]
        if blocks is not None:
            block_type = "VARCHAR" if self.schema.block_id_type == "string" else "BIGINT"
            sql += f" AND block_id = ANY(?::{block_type}[])"
            params.append(blocks)
        # Sorting a label's few rows here costs microseconds; an ORDER BY costs DuckDB a quarter millisecond.
        with self._index_read():
            rows = self.db_connection.execute(sql, params).fetchnumpy()
        order = np.lexsort((rows["row_offset"], rows["file_id"], rows["label"]))
        return {
            "label": rows["label"][order].astype(np.uint64),
            "file_id": rows["file_id"][order].astype(np.int64),
            "row_offset": rows["row_offset"][order].astype(np.int64),
            "point_count": rows["point_count"][order].astype(np.int64),
        }

    def read_rows(self, file_ids: np.ndarray, offsets: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Gather row ranges of the store's files, as ``point_index`` rows name them, into one (N, D) array.

        The ranges come back in the given order; only the row groups holding them are read.
        Compaction reads whole label ranges this way.

        Example::

            rows = query.sql("SELECT file_id, row_offset, point_count FROM point_index WHERE block_id = '3_1_4'",
                             output="numpy")
            points = query.read_rows(rows["file_id"], rows["row_offset"], rows["point_count"])
        """
        columns = self.schema.columns
        points = np.empty((int(counts.sum()), len(columns)), dtype=self.schema.dtype)
        file_ids, offsets, counts, destinations = _coalesced(file_ids, offsets, counts)
        for file_id in np.unique(file_ids):
            mine = np.flatnonzero(file_ids == file_id)
            path, group_size, byte_size = self._files[int(file_id)]
            first_group = offsets[mine] // group_size
            last_group = (offsets[mine] + counts[mine] - 1) // group_size
            if len(mine) == 1:  # the usual case: a label's rows in a file are adjacent, so slices do
                groups = np.arange(first_group[0], last_group[0] + 1)
                start, destination, count = (
                    int(offsets[mine[0]] % group_size),
                    int(destinations[mine[0]]),
                    int(counts[mine[0]]),
                )
                take, put = slice(start, start + count), slice(destination, destination + count)
            else:
                groups = np.unique(_row_ranges(first_group, last_group - first_group + 1))
                # Every group read before the last one of a file is full, so rank * size locates it.
                sources = np.searchsorted(groups, first_group) * group_size + offsets[mine] % group_size
                take = _row_ranges(sources, counts[mine])
                put = _row_ranges(destinations[mine], counts[mine])
            table = self._read_row_groups(int(file_id), path, byte_size, groups.tolist())
            for j, name in enumerate(columns):
                points[put, j] = table.column(name).to_numpy()[take]
        return points

    def _read_row_groups(self, file_id: int, path: str, byte_size: int, groups: list[int]) -> pa.Table:
        try:
            parquet = self._open_files.get(file_id)
            if parquet is None:
                source = self._storage.open_input(path, byte_size)
                # Pre-buffering coalesces a row group's column chunks into one request: worth a round
                # trip to an object store, a quarter of the read time lost on a local file.
                parquet = pq.ParquetFile(
                    source, pre_buffer=not isinstance(source, str), page_checksum_verification=self.verify_checksums
                )
                self._open_files[file_id] = parquet
                if len(self._open_files) > _OPEN_FILES_KEPT:
                    self._open_files.popitem(last=False)
            else:
                self._open_files.move_to_end(file_id)
            # Decoding columns on threads pays from two row groups on; for one it costs more than it saves.
            return parquet.read_row_groups(groups, columns=list(self.schema.columns), use_threads=len(groups) > 1)
        except (StorageAccessError, StorageUnavailableError):
            self._open_files.pop(file_id, None)
            raise  # the store is fine, reaching it is not
        except (OSError, pa.ArrowException) as error:
            self._open_files.pop(file_id, None)
            raise DataFileError(
                f"cannot read {self._storage.describe(path)}, which the index lists: {error}. "
                f"The store is damaged: {layout.rewrite_advice(path)}"
            ) from error

    def _shape_result(
        self, labels: list[int], single: bool, point_labels: np.ndarray, points: np.ndarray, output: Output
    ) -> Any:
        if output == "numpy":
            if single:
                return points
            order = np.argsort(point_labels, kind="stable")
            sorted_labels = point_labels[order]
            wanted = np.array(labels, dtype=np.uint64)
            starts = np.searchsorted(sorted_labels, wanted, "left")
            ends = np.searchsorted(sorted_labels, wanted, "right")
            return {lab: points[order[s:e]] for lab, s, e in zip(labels, starts, ends, strict=True)}
        table = pa.table(list(points.T), names=list(self.schema.columns))
        if not single:
            table = table.add_column(0, "label", pa.array(point_labels, pa.uint64()))
        return table if output == "arrow" else table.to_pandas()

    def _remember(self, label: int, points: np.ndarray) -> None:
        self._points_cache[label] = points.copy()
        while len(self._points_cache) > self.cache_size:
            self._points_cache.popitem(last=False)

    # -- SQL and summaries ---------------------------------------------------

    def sql(
        self,
        statement: str,
        params: Sequence[Any] | None = None,
        output: Output = "pandas",
        timeout: float | None = None,
    ) -> Any:
        """Run one read-only ``SELECT`` over the index tables (``labels``, ``point_index``, ``files``, ``workers``).

        Joins, subqueries, WITH clauses and ``?`` parameters are fine; table functions,
        file paths and settings are refused (``ReadOnlySQLError``), DuckDB's own
        complaints raise ``SQLError``. With ``timeout`` (seconds) a statement still
        running then is stopped with ``QueryTimeoutError``; Ctrl-C or Jupyter's
        interrupt stops it at once with ``KeyboardInterrupt``.

        Example: ``query.sql("SELECT label, point_count FROM labels ORDER BY point_count DESC LIMIT 5", timeout=10)``.
        """
        try:
            with self._index_read():
                return run_select(self.db_connection, _CATALOG, self._tables, statement, params, output, timeout)
        except duckdb.Error as error:
            raise SQLError(str(error)) from error

    def info(self) -> dict[str, Any]:
        """Store-wide totals: labels, points, index rows, files, bytes, workers and the schema."""
        with self._index_read():
            (labels, points) = self.db_connection.execute(
                "SELECT count(*), coalesce(sum(point_count), 0) FROM labels"
            ).fetchone()
            (files, stored_bytes) = self.db_connection.execute(
                "SELECT count(*), coalesce(sum(byte_size), 0) FROM files"
            ).fetchone()
            (index_rows,) = self.db_connection.execute("SELECT count(*) FROM point_index").fetchone()
            (workers,) = self.db_connection.execute("SELECT count(*) FROM workers").fetchone()
        return {
            "store": self.storage_config.base_path,
            "labels": labels,
            "points": int(points),
            "index_rows": index_rows,
            "files": files,
            "bytes": int(stored_bytes),
            "workers": workers,
            "columns": list(self.schema.columns),
            "dtype": self.schema.dtype.name,
            "block_id_type": self.schema.block_id_type,
        }

    print_timing_info = staticmethod(print_timing_info)
