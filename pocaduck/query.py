"""Label queries on stores of this library: the index says which rows of which files hold a label.

A new Query finds points through the store's label directory
(``label_directory.py``: a few ranged reads, nothing downloaded whole) and
fetches the unified index only when something else needs it (SQL, labels,
blocks, summaries): the copy of it published with that directory, so the
Query reads one version of the store throughout. A store without a directory
to trust is read through its index from the start. The index is attached
read-only to the process's shared database (``index.AttachedIndex``), which
makes that cheap too; only our own statements run there. Users' SQL (``Query.sql``, ``db_connection``) runs on a
connection of its own, opened on first use, with external access disabled and
every statement parsed so that only SELECTs over the index tables pass. Point
rows are read with pyarrow through ``pointfile.PointFiles``, never scanning
files or row groups that do not hold the label.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from . import layout
from ._sql import lock_down, private_connection, tables_of
from ._timing import Timing
from .config import StorageConfig
from .errors import (
    DamagedStoreError,
    InvalidArgumentError,
    InvalidBlockIdError,
    LabelDirectoryError,
    StoreNotConsolidatedError,
    StoreNotFoundError,
)
from .index import AttachedIndex, attach_read_only, file_locations
from .keys import check_block_id, check_label
from .label_directory import open_in_force
from .pointfile import PointFiles
from .reader import Output, Reader
from .store import Store, open_store

_CATALOG = "store_index"  # the unified index's name in the users' SQL connection


def _opened(store: object) -> Store:
    if not isinstance(store, Store | StorageConfig | str | os.PathLike):
        raise InvalidArgumentError(
            f"Query expects a store path, a URL, a StorageConfig or a Store, got {type(store).__name__} {store!r}"
        )
    return open_store(store)


class Query(Reader):
    """Read points and summaries of labels from a consolidated store.

    ``Query(path)`` on a store written by the original pocaduck 0.1.x gives a
    ``LegacyQuery``, the :class:`~pocaduck.reader.Reader` for that layout.

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

    def __new__(cls, storage_config: Store | StorageConfig | str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        store = _opened(storage_config)
        if cls is Query and store.kind == "original":
            from .legacy import LegacyQuery

            return LegacyQuery(store, *args, **kwargs)
        query = super().__new__(cls)
        query._store = store  # opened once: __init__ takes it from here
        return query

    def __init__(
        self,
        storage_config: Store | StorageConfig | str | os.PathLike,
        index_path: str | None = None,
        threads: int | None = None,
        cache_size: int = 10,
        *,
        verify_checksums: bool = True,
    ):
        store = self._store
        self.storage_config = store.config
        self.cache_size = cache_size
        self.threads = threads or os.cpu_count() or 1
        self._storage = store.storage
        self._index: AttachedIndex | None = None
        self._closed = False
        self._points_cache: OrderedDict[int, np.ndarray] = OrderedDict()
        # Off only to measure what verifying Parquet page checksums costs: a damaged page then reads as wrong points.
        self._verify_checksums = verify_checksums
        self.using_optimized_data = False
        self.schema = store.schema
        if self.schema is None and not self._storage.root_exists():
            raise StoreNotFoundError(f"no store at {store.path}: the path does not exist")
        # Points are found through the label directory, a few ranged reads, while nothing else needs the index:
        # on a bucket that spares downloading it whole. Without a directory to trust, the index serves from the start.
        self._directory = open_in_force(self._storage) if index_path is None and self.schema is not None else None
        self._index_path = index_path
        if index_path is None and self._directory is None:
            self._index_path = self._fetch_index()  # refuses a store never consolidated, saying what to do
        if self.schema is None:
            raise StoreNotFoundError(f"{store.path} has no manifest ({layout.MANIFEST})")
        if self._directory is None:
            self._attach_index()
        else:
            self._points = PointFiles(
                self._storage, self.schema, self._directory.files, verify_checksums=verify_checksums
            )

    @property
    def index_path(self) -> str:
        """The unified index on local disk; on a bucket it is downloaded when first needed (SQL, labels, blocks, info)."""
        if self._index_path is None:
            self._index_path = self._fetch_index()
        return self._index_path

    def _fetch_index(self) -> str:
        if self._directory is not None and self._directory.index is not None:
            try:  # the index the directory was built from, as it was published: what this Query opened
                return self._storage.local_copy(self._directory.index)
            except FileNotFoundError as error:
                raise LabelDirectoryError(
                    f"{self._storage.describe(self._directory.index)}, the index this Query opened, is gone "
                    f"(collect_garbage removes index versions no longer in force): open a new Query"
                ) from error
        if not self._storage.exists(layout.UNIFIED_INDEX):
            path = self.storage_config.base_path
            if self.schema is None and not self._storage.listdir(layout.WORKERS):
                raise StoreNotFoundError(f"{path} holds no pocaduck store")
            raise StoreNotConsolidatedError(
                f"{path} has not been consolidated yet: run "
                f"Ingestor.consolidate_indexes(config) or `pocaduck consolidate STORE` after the workers finish"
            )
        return self._storage.local_copy(layout.UNIFIED_INDEX)

    def _attach_index(self) -> None:
        with self._index_read():
            self._index = AttachedIndex(self.index_path)
            if self._directory is None:
                files = file_locations(self._index.cursor)
                self._points = PointFiles(self._storage, self.schema, files, verify_checksums=self._verify_checksums)

    @functools.cached_property
    def db_connection(self) -> duckdb.DuckDBPyConnection:
        """The index on a connection of its own without file access: where users' SQL runs (opened on first use)."""
        with self._index_read():
            con = private_connection(self.threads)
            attach_read_only(con, self.index_path, _CATALOG)
            con.execute(f"USE {_CATALOG}")
            lock_down(con)
        return con

    _catalog = _CATALOG

    @functools.cached_property
    def _tables(self) -> frozenset[str]:
        return tables_of(self.db_connection, _CATALOG)

    @contextmanager
    def _index_read(self) -> Iterator[None]:
        """Turn DuckDB's read errors on the index file into one that says how to rebuild it."""
        try:
            yield
        except (duckdb.IOException, duckdb.SerializationException) as error:
            raise DamagedStoreError(
                f"the index {self._index_path or self._storage.describe(layout.UNIFIED_INDEX)} is damaged or "
                f"truncated ({error}); rebuild it with "
                f"`pocaduck consolidate {self.storage_config.base_path}`"
            ) from error

    def close(self) -> None:
        """Release the index, open files and the cache."""
        self._closed = True
        self._directory = None  # lookups go to _lookups, which refuses
        self._points_cache.clear()
        if hasattr(self, "_points"):
            self._points.close()
        if self._index is not None:
            self._index.close()
            self._index = None
        connection = self.__dict__.pop("db_connection", None)
        if connection is not None:
            connection.close()

    @property
    def _lookups(self) -> duckdb.DuckDBPyConnection:
        if self._closed:
            raise InvalidArgumentError("this Query was closed: open a new one, which is cheap")
        if self._index is None:
            self._attach_index()
        return self._index.cursor

    # -- label lookups ---------------------------------------------------

    def get_labels(self) -> np.ndarray:
        """All labels in the store, sorted, as uint64."""
        with self._index_read():
            labels = self._lookups.execute("SELECT label FROM labels ORDER BY label").fetchnumpy()["label"]
        return labels.astype(np.uint64)

    def get_point_count(self, label: int, timing: bool = False) -> int | tuple[int, dict]:
        """Number of points stored for ``label`` (0 when unknown)."""
        clock = Timing(label=check_label(label))
        with clock.phase("index_lookup_time"), self._index_read():
            if self._index is None and self._directory is not None:
                return clock.finish(self._directory.point_count(clock["label"]), timing)
            row = self._lookups.execute(
                "SELECT point_count FROM labels WHERE label = ?::UBIGINT", [clock["label"]]
            ).fetchone()
        return clock.finish(int(row[0]) if row else 0, timing)

    def get_blocks_for_label(self, label: int, timing: bool = False) -> list | tuple[list, dict]:
        """Sorted ids of the blocks holding ``label``'s points."""
        clock = Timing(label=check_label(label))
        with clock.phase("index_lookup_time"), self._index_read():
            rows = self._lookups.execute(
                "SELECT DISTINCT block_id FROM point_index WHERE label = ?::UBIGINT ORDER BY block_id",
                [clock["label"]],
            ).fetchall()
        blocks = [block_id for (block_id,) in rows]
        clock["blocks_found"] = len(blocks)
        return clock.finish(blocks, timing)

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
        labels = [check_label(label)] if single else [check_label(each) for each in label]
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
            block, kind = check_block_id(block)
            if kind != wanted:
                raise InvalidBlockIdError(
                    f"this store's block ids are {'strings' if wanted == 'string' else 'int64 integers'}, "
                    f"but blocks holds {block!r}"
                )
            checked.append(block)
        return checked

    def _lookup(self, labels: list[int], blocks: list[str | int] | None) -> dict[str, np.ndarray]:
        if self._index is None and self._directory is not None and blocks is None:
            return self._directory.lookup(labels)  # blocks, and whatever follows the index once it is here, need it
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
            rows = self._lookups.execute(sql, params).fetchnumpy()
        order = np.lexsort((rows["row_offset"], rows["file_id"], rows["label"]))
        return {
            "label": rows["label"][order].astype(np.uint64),
            "file_id": rows["file_id"][order].astype(np.int64),
            "row_offset": rows["row_offset"][order].astype(np.int64),
            "point_count": rows["point_count"][order].astype(np.int64),
        }

    def read_rows(self, file_ids: np.ndarray, offsets: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Gather row ranges of the store's files, as ``point_index`` rows name them, into one (N, D) array.

        Example::

            rows = query.sql("SELECT file_id, row_offset, point_count FROM point_index WHERE block_id = '3_1_4'",
                             output="numpy")
            points = query.read_rows(rows["file_id"], rows["row_offset"], rows["point_count"])
        """
        return self._points.read_rows(file_ids, offsets, counts)

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

    # -- summaries ----------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Store-wide totals: labels, points, index rows, files, bytes, workers and the schema."""
        with self._index_read():
            (labels, points) = self._lookups.execute(
                "SELECT count(*), coalesce(sum(point_count), 0) FROM labels"
            ).fetchone()
            (files, stored_bytes) = self._lookups.execute(
                "SELECT count(*), coalesce(sum(byte_size), 0) FROM files"
            ).fetchone()
            (index_rows,) = self._lookups.execute("SELECT count(*) FROM point_index").fetchone()
            (workers,) = self._lookups.execute("SELECT count(*) FROM workers").fetchone()
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
