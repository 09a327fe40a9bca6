"""Stores written by the original pocaduck (0.1.x): the reader that answers as the original did.

The original layout::

    STORE/
      unified_index.db                           point_cloud_index(label, block_id, file_path, point_count)
      worker_<id>/index_<id>.db                  the same table for one worker
      worker_<id>/data/<id>-<n>.parquet          label int64, block_id string, data list<number>: one row per point
      optimized/optimized_index.db               optional: point_cloud_index(label, file_path, point_count)
      optimized/optimize_<id>/optimized_<uuid>.parquet   label int64, data list<int64>, de-duplicated, no block ids

``LegacyQuery`` answers as the original ``Query`` does, quirks included, so
results do not change under a lab's feet: points come back as int64, and from
the un-optimized data they are de-duplicated and sorted (``np.unique``); from
optimized data they are not; an unknown label gives a 1-D empty array;
``get_blocks_for_label`` is ``[]`` on optimized data. ``Query(store)`` returns
one automatically for such a store. ``migrate.py`` converts such a store into
this library's layout.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import layout
from ._gate import Gate, gated
from ._sql import lock_down, private_connection, tables_of
from ._timing import Timing
from .arguments import reader_settings, sample_and_seed
from .config import StorageConfig
from .errors import LegacyStoreError, StoreNotFoundError
from .index import attach_read_only
from .keys import check_label
from .reader import Output, Reader
from .sampling import sample_rows
from .store import Store, open_store

logger = logging.getLogger("pocaduck")

_INT64_LIMIT = 2**63


def store_relative(recorded_path: str) -> str:
    """Where a file the original index names sits in the store.

    The original records full paths as they were at ingestion time; its files
    always sit two folders below the store root, so the last three parts
    locate them even after the store was moved, copied or mounted elsewhere.

    >>> store_relative("/old/mount/store/worker_3/data/3-0.parquet")
    'worker_3/data/3-0.parquet'
    """
    return "/".join(recorded_path.replace("\\", "/").split("/")[-3:])


def points_of(data: pa.ChunkedArray | pa.Array, where: str) -> np.ndarray:
    """The ``data`` list column as an (N, D) array, without a Python loop over rows."""
    data = data.combine_chunks() if isinstance(data, pa.ChunkedArray) else data
    lengths = pc.list_value_length(data).to_numpy(zero_copy_only=False)
    if len(lengths) == 0:
        return np.empty((0, 0))
    if (lengths != lengths[0]).any():
        raise LegacyStoreError(f"{where} holds points of different dimensions ({sorted(set(lengths.tolist()))})")
    return pc.list_flatten(data).to_numpy(zero_copy_only=False).reshape(len(lengths), int(lengths[0]))


class LegacyQuery(Reader):
    """Read-only queries on an original-library store, answering exactly as ``pocaduck==0.1.1`` did.

    Example::

        query = Query("/path/to/old_store")
        type(query).__name__, query.get_points(42).dtype
        # -> ('LegacyQuery', dtype('int64'))
    """

    _catalog = "memory"  # where the views over the attached original index live

    def __init__(
        self,
        storage_config: Store | StorageConfig | str | os.PathLike,
        index_path: str | None = None,
        threads: int | None = None,
        cache_size: int = 10,
    ):
        self.threads, self.cache_size = reader_settings(threads, cache_size)
        store = open_store(storage_config)
        self.storage_config = store.config
        self._storage = store.storage
        self.using_optimized_data = index_path is None and self._storage.exists(layout.LEGACY_OPTIMIZED_INDEX)
        if index_path is None:
            index_path = self._storage.local_copy(
                layout.LEGACY_OPTIMIZED_INDEX if self.using_optimized_data else layout.LEGACY_INDEX
            )
        if not os.path.exists(index_path):
            raise StoreNotFoundError(f"{index_path} does not exist: run the original's consolidate_indexes first")
        self.index_path = index_path
        self._gate = Gate()
        self._lock = threading.RLock()  # the connection takes one call at a time; the cache one change
        self.db_connection = self._connect(index_path)
        self._tables = tables_of(self.db_connection, self._catalog)
        self._points_cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def _connect(self, index_path: str) -> duckdb.DuckDBPyConnection:
        """The original's index, read-only, behind views named as in our index, so SQL and widgets work alike.

        The optimized index has no block ids: its ``block_count`` is NULL.
        """
        con = private_connection(self.threads)
        attach_read_only(con, index_path, "legacy_index")
        blocks = "NULL" if self.using_optimized_data else "count(DISTINCT block_id)"
        con.execute("CREATE VIEW point_cloud_index AS SELECT * FROM legacy_index.point_cloud_index")
        con.execute(
            f"CREATE VIEW labels AS SELECT label::UBIGINT AS label, sum(point_count)::BIGINT AS point_count, "
            f"{blocks}::BIGINT AS block_count, count(DISTINCT file_path)::BIGINT AS file_count "
            "FROM legacy_index.point_cloud_index GROUP BY label"
        )
        lock_down(con)
        return con

    @contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            yield self.db_connection

    def _sql_connection(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            return self.db_connection.cursor()

    @functools.cached_property
    def schema(self) -> layout.Schema:
        """The original stored one ``data`` list column of any width, read back as int64: columns x, y, z, ..."""
        with self._cursor() as cursor:
            (path,) = cursor.execute("SELECT file_path FROM point_cloud_index LIMIT 1").fetchone()
        first = pq.ParquetFile(self._storage.open_input(store_relative(path))).read_row_group(0, columns=["data"])
        width = int(pc.list_value_length(first.column("data").slice(0, 1)).to_numpy()[0])
        return layout.Schema(layout.default_columns(width), np.dtype("int64"), "string")

    def close(self) -> None:
        """Release the index connection and the cache, once the calls in progress (other threads') have ended."""
        if self._gate.shut():
            with self._lock:
                self._points_cache.clear()
                self.db_connection.close()

    @gated
    def get_labels(self) -> np.ndarray:
        """All labels, sorted, as uint64."""
        with self._cursor() as cursor:
            rows = cursor.execute("SELECT DISTINCT label FROM point_cloud_index ORDER BY label").fetchnumpy()
        return rows["label"].astype(np.uint64)

    @gated
    def get_blocks_for_label(self, label: int, timing: bool = False) -> list | tuple[list, dict]:
        """Block ids holding ``label`` (sorted); ``[]`` on optimized data, which has none."""
        clock = Timing(label=check_label(label), using_optimized_data=self.using_optimized_data)
        blocks: list = []
        if not self.using_optimized_data:
            with clock.phase("index_lookup_time"), self._cursor() as cursor:
                rows = cursor.execute(
                    "SELECT DISTINCT block_id FROM point_cloud_index WHERE label = ? ORDER BY block_id", [int(label)]
                ).fetchall()
            blocks = [block_id for (block_id,) in rows]
        clock["blocks_found"] = len(blocks)
        return clock.finish(blocks, timing)

    @gated
    def get_point_count(self, label: int, timing: bool = False) -> int | tuple[int, dict]:
        """The sum of the index's point counts: like the original, before de-duplication."""
        clock = Timing(label=check_label(label), using_optimized_data=self.using_optimized_data)
        with clock.phase("index_lookup_time"), self._cursor() as cursor:
            (count,) = cursor.execute(
                "SELECT coalesce(sum(point_count), 0) FROM point_cloud_index WHERE label = ?", [int(label)]
            ).fetchone()
        return clock.finish(int(count), timing)

    @gated
    def get_points(
        self,
        label: int | Iterable[int],
        use_cache: bool = True,
        timing: bool = False,
        *,
        sample: int | None = None,
        seed: int | None = None,
    ) -> Any:
        """The label's points as the original returned them: int64, de-duplicated unless from optimized data.

        Several labels give a dict ``{label: points}`` (an extension: the original took one).
        ``sample=N`` keeps ``min(N, count)`` of those rows, chosen from them as on
        any store (an extension too).
        """
        sample, seed = sample_and_seed(sample, seed)
        if isinstance(label, Iterable):
            return {
                each: self.get_points(each, use_cache, sample=sample, seed=seed) for each in map(check_label, label)
            }
        label = check_label(label)
        if sample is not None:
            points = self.get_points(label, use_cache)
            return points[sample_rows(points, label, sample, seed)]
        clock = Timing(label=label, cache_hit=False, files_queried=0, points_returned=0)
        clock["using_optimized_data"] = self.using_optimized_data
        with self._lock:
            points = self._points_cache.get(label) if use_cache and self.cache_size > 0 else None
            if points is not None:
                self._points_cache.move_to_end(label)
        if points is not None:
            clock.update(cache_hit=True, points_returned=len(points))
            return clock.finish(points, timing)
        with clock.phase("index_lookup_time"):
            paths = [] if label >= _INT64_LIMIT else self._files_of(label)
        with clock.phase("data_read_time"):
            points = self._read(label, paths)
        clock.update(files_queried=len(paths), points_returned=len(points))
        if use_cache and self.cache_size > 0:
            with self._lock:
                self._points_cache[label] = points
                while len(self._points_cache) > self.cache_size:
                    self._points_cache.popitem(last=False)
        return clock.finish(points, timing)

    def iter_points(
        self,
        label: int | Iterable[int],
        chunk_size: int | None = None,
        *,
        batch_size: int | None = None,
        output: Output = "numpy",
    ) -> Iterator[Any]:
        """Not on the original's layout, whose files are read whole: migrate the store to stream labels."""
        raise self._migrate_for("iter_points")

    def get_labels_in_box(self, lower: Sequence[float], upper: Sequence[float]) -> np.ndarray:
        """Not on the original's layout, whose index keeps no bounding boxes: migrate the store for box queries."""
        raise self._migrate_for("get_labels_in_box")

    def get_points_in_box(
        self, lower: Sequence[float], upper: Sequence[float], labels: Any = None, output: Output = "arrow"
    ) -> Any:
        """Not on the original's layout, whose index keeps no bounding boxes: migrate the store for box queries."""
        raise self._migrate_for("get_points_in_box")

    def _migrate_for(self, method: str) -> LegacyStoreError:
        return LegacyStoreError(
            f"{method} needs the bounding boxes and row runs this library's index keeps; "
            f"{self.storage_config.base_path} was written by the original pocaduck 0.1.x. Convert it once with "
            f"`pocaduck migrate OLD NEW` (pocaduck.migrate) and query the new store"
        )

    def _files_of(self, label: int) -> list[str]:
        with self._cursor() as cursor:
            rows = cursor.execute(
                "SELECT DISTINCT file_path FROM point_cloud_index WHERE label = ? ORDER BY file_path", [label]
            ).fetchall()
        return [store_relative(path) for (path,) in rows]

    def _read(self, label: int, paths: list[str]) -> np.ndarray:
        tables = [
            pq.read_table(
                self._storage.open_input(path),
                columns=["data"],
                filters=[("label", "==", pa.scalar(label, pa.int64()))],
            )
            for path in paths
        ]
        rows = sum(table.num_rows for table in tables)
        if rows == 0:
            return np.array([], dtype=np.int64)
        data = pa.concat_tables(tables).column("data")
        points = points_of(data, f"label {label}").astype(np.int64)
        return points if self.using_optimized_data else np.unique(points, axis=0)

    @gated
    def info(self) -> dict[str, Any]:
        """Totals, as ``pocaduck info`` prints them."""
        with self._cursor() as cursor:
            labels, points, files = cursor.execute(
                "SELECT count(DISTINCT label), coalesce(sum(point_count), 0), count(DISTINCT file_path) "
                "FROM point_cloud_index"
            ).fetchone()
        return {
            "store": self.storage_config.base_path,
            "format": "pocaduck 0.1.x (read-only; `pocaduck migrate` converts it)",
            "labels": labels,
            "points": int(points),
            "files": files,
            "using_optimized_data": self.using_optimized_data,
        }
