"""Stores written by the original pocaduck (0.1.x): read them as it did, or migrate them into this layout.

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
one automatically for such a store. ``migrate`` converts the stored rows
exactly (every row, its dtype, its block id) into a store of this library.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import layout
from ._sql import lock_down, private_connection, run_select, tables_of
from ._timing import Timing, print_timing_info
from .config import StorageConfig, as_config
from .consolidate import consolidate
from .errors import InvalidArgumentError, LegacyStoreError, MigrationError, SQLError, StoreNotFoundError
from .executor import Failure, Pool, ShouldStop, Task, TaskOutcome, TaskStopped, run_tasks
from .index import attach_read_only, label_summary
from .ingest import Ingestor, check_label
from .progress import Callback, Progress, ProgressEvent, progress_sink
from .storage import Storage, open_storage

logger = logging.getLogger("pocaduck")

LEGACY_INDEX = "unified_index.db"
LEGACY_OPTIMIZED_INDEX = "optimized/optimized_index.db"
_INT64_LIMIT = 2**63
_CATALOG = "memory"  # where the views over the attached original index live
_POOL: Pool = "processes"  # local workers of a migration: see bench/bench_executors.py


def is_legacy_store(storage: Storage) -> bool:
    """A store of the original library: its index files, and no manifest of ours.

    >>> import tempfile
    >>> is_legacy_store(open_storage(StorageConfig(tempfile.mkdtemp())))
    False
    """
    if storage.exists(layout.MANIFEST):
        return False
    return storage.exists(LEGACY_INDEX) or storage.exists(LEGACY_OPTIMIZED_INDEX)


def _store_relative(recorded_path: str) -> str:
    """Where a file the original index names sits in the store.

    The original records full paths as they were at ingestion time; its files
    always sit two folders below the store root, so the last three parts
    locate them even after the store was moved, copied or mounted elsewhere.

    >>> _store_relative("/old/mount/store/worker_3/data/3-0.parquet")
    'worker_3/data/3-0.parquet'
    """
    return "/".join(recorded_path.replace("\\", "/").split("/")[-3:])


def _points_of(data: pa.ChunkedArray | pa.Array, where: str) -> np.ndarray:
    """The ``data`` list column as an (N, D) array, without a Python loop over rows."""
    data = data.combine_chunks() if isinstance(data, pa.ChunkedArray) else data
    lengths = pc.list_value_length(data).to_numpy(zero_copy_only=False)
    if len(lengths) == 0:
        return np.empty((0, 0))
    if (lengths != lengths[0]).any():
        raise LegacyStoreError(f"{where} holds points of different dimensions ({sorted(set(lengths.tolist()))})")
    return pc.list_flatten(data).to_numpy(zero_copy_only=False).reshape(len(lengths), int(lengths[0]))


class LegacyQuery:
    """Read-only queries on an original-library store, answering exactly as ``pocaduck==0.1.1`` did.

    Example::

        query = Query("/path/to/old_store")
        type(query).__name__, query.get_points(42).dtype
        # -> ('LegacyQuery', dtype('int64'))
    """

    def __init__(
        self,
        storage_config: StorageConfig | str | os.PathLike,
        index_path: str | None = None,
        threads: int | None = None,
        cache_size: int = 10,
    ):
        self.storage_config = as_config(storage_config)
        self.cache_size = cache_size
        self.threads = threads or os.cpu_count() or 1
        self._storage = open_storage(self.storage_config)
        self.using_optimized_data = index_path is None and self._storage.exists(LEGACY_OPTIMIZED_INDEX)
        if index_path is None:
            index_path = self._storage.local_copy(LEGACY_OPTIMIZED_INDEX if self.using_optimized_data else LEGACY_INDEX)
        if not os.path.exists(index_path):
            raise StoreNotFoundError(f"{index_path} does not exist: run the original's consolidate_indexes first")
        self.index_path = index_path
        self.db_connection = self._connect(index_path)
        self._tables = tables_of(self.db_connection, _CATALOG)
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

    @functools.cached_property
    def schema(self) -> layout.Schema:
        """The original stored one ``data`` list column of any width, read back as int64: columns x, y, z, ..."""
        (path,) = self.db_connection.execute("SELECT file_path FROM point_cloud_index LIMIT 1").fetchone()
        first = pq.ParquetFile(self._storage.open_input(_store_relative(path))).read_row_group(0, columns=["data"])
        width = int(pc.list_value_length(first.column("data").slice(0, 1)).to_numpy()[0])
        return layout.Schema(layout.default_columns(width), np.dtype("int64"), "string")

    def sql(
        self, statement: str, params: Sequence[Any] | None = None, output: str = "pandas", timeout: float | None = None
    ) -> Any:
        """One read-only SELECT over ``labels`` and ``point_cloud_index``, as :meth:`pocaduck.Query.sql` runs it.

        Example: ``query.sql("SELECT label, point_count FROM labels ORDER BY point_count DESC LIMIT 5")``.
        """
        try:
            return run_select(self.db_connection, _CATALOG, self._tables, statement, params, output, timeout)
        except duckdb.Error as error:
            raise SQLError(str(error)) from error

    def get_label_summary(self, label: int) -> dict[str, Any]:
        """Point count (before de-duplication, as the original counts), block count and file count of ``label``."""
        return label_summary(self.db_connection, check_label(label))

    def __enter__(self) -> LegacyQuery:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._points_cache.clear()
        if self.db_connection is not None:
            self.db_connection.close()
            self.db_connection = None

    print_timing_info = staticmethod(print_timing_info)

    def get_labels(self) -> np.ndarray:
        """All labels, sorted, as uint64."""
        rows = self.db_connection.execute("SELECT DISTINCT label FROM point_cloud_index ORDER BY label").fetchnumpy()
        return rows["label"].astype(np.uint64)

    def get_blocks_for_label(self, label: int, timing: bool = False) -> list | tuple[list, dict]:
        """Block ids holding ``label`` (sorted); ``[]`` on optimized data, which has none."""
        clock = Timing(label=check_label(label), using_optimized_data=self.using_optimized_data)
        blocks: list = []
        if not self.using_optimized_data:
            with clock.phase("index_lookup_time"):
                rows = self.db_connection.execute(
                    "SELECT DISTINCT block_id FROM point_cloud_index WHERE label = ? ORDER BY block_id", [int(label)]
                ).fetchall()
            blocks = [block_id for (block_id,) in rows]
        clock["blocks_found"] = len(blocks)
        return clock.finish(blocks, timing)

    def get_point_count(self, label: int, timing: bool = False) -> int | tuple[int, dict]:
        """The sum of the index's point counts: like the original, before de-duplication."""
        clock = Timing(label=check_label(label), using_optimized_data=self.using_optimized_data)
        with clock.phase("index_lookup_time"):
            (count,) = self.db_connection.execute(
                "SELECT coalesce(sum(point_count), 0) FROM point_cloud_index WHERE label = ?", [int(label)]
            ).fetchone()
        return clock.finish(int(count), timing)

    def get_points(self, label: int | Iterable[int], use_cache: bool = True, timing: bool = False) -> Any:
        """The label's points as the original returned them: int64, de-duplicated unless from optimized data.

        Several labels give a dict ``{label: points}`` (an extension: the original took one).
        """
        if isinstance(label, Iterable):
            return {each: self.get_points(each, use_cache) for each in map(check_label, label)}
        label = check_label(label)
        clock = Timing(label=label, cache_hit=False, files_queried=0, points_returned=0)
        clock["using_optimized_data"] = self.using_optimized_data
        if use_cache and self.cache_size > 0 and label in self._points_cache:
            self._points_cache.move_to_end(label)
            points = self._points_cache[label]
            clock.update(cache_hit=True, points_returned=len(points))
            return clock.finish(points, timing)
        with clock.phase("index_lookup_time"):
            paths = [] if label >= _INT64_LIMIT else self._files_of(label)
        with clock.phase("data_read_time"):
            points = self._read(label, paths)
        clock.update(files_queried=len(paths), points_returned=len(points))
        if use_cache and self.cache_size > 0:
            self._points_cache[label] = points
            while len(self._points_cache) > self.cache_size:
                self._points_cache.popitem(last=False)
        return clock.finish(points, timing)

    def _files_of(self, label: int) -> list[str]:
        rows = self.db_connection.execute(
            "SELECT DISTINCT file_path FROM point_cloud_index WHERE label = ? ORDER BY file_path", [label]
        ).fetchall()
        return [_store_relative(path) for (path,) in rows]

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
        points = _points_of(data, f"label {label}").astype(np.int64)
        return points if self.using_optimized_data else np.unique(points, axis=0)

    def info(self) -> dict[str, Any]:
        """Totals, as ``pocaduck info`` prints them."""
        labels, points, files = self.db_connection.execute(
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


# -- migration ---------------------------------------------------------------


def migrate(
    old_store: StorageConfig | str | os.PathLike,
    new_store: StorageConfig | str | os.PathLike,
    *,
    max_points_per_file: int = 10_000_000,
    progress: Progress = None,
    workers: int = 1,
    client: Any = None,
) -> str:
    """Convert an original-library store into a new store of this library, exactly; return the unified index.

    Every row the original's index refers to is copied with its label, block id
    and values (in their stored dtype, no de-duplication). Each original worker
    becomes a worker of the new store, so running it again after an
    interruption rewrites them and the result is the same. The new store must be
    absent, empty, or such an interrupted migration of the same old store:
    anything else is refused before a file is written. A store that has only
    optimized data (the original drops block ids there) is migrated with the
    block id ``""``.

    Original workers are converted one after another in this thread, or
    ``workers`` at a time in local processes (from a script, call this under
    ``if __name__ == "__main__":``), or on a ``dask.distributed.Client`` when
    one is given; the result is the same. Processes, not threads: copying a
    file makes a Python call per (label, block) run, which holds the GIL, and
    threads migrated up to a third slower (bench/bench_executors.py).
    ``progress`` (a callable, or ``"tqdm"`` for bars) receives each worker's
    :class:`~pocaduck.ProgressEvent` s, one per file converted.

    Example::

        migrate("/data/old_store", "/data/new_store", workers=4, progress="tqdm")
        # -> '/data/new_store/unified_index.duckdb'
    """
    source = as_config(old_store).base_path  # as given: an interrupted migration is recognised by it
    old_config, new_config = _absolute(as_config(old_store)), _absolute(as_config(new_store))
    old = open_storage(old_config)
    if not old.root_exists() or not is_legacy_store(old):
        raise LegacyStoreError(
            f"{source} is not a store written by the original pocaduck "
            f"(no {LEGACY_INDEX} or {LEGACY_OPTIMIZED_INDEX}; run the original's consolidate_indexes first)"
        )
    _check_target(source, open_storage(new_config))
    optimized_only = not old.exists(LEGACY_INDEX)
    pairs = _indexed_pairs(old, LEGACY_OPTIMIZED_INDEX if optimized_only else LEGACY_INDEX)
    files = sorted(pairs)
    if not files:
        raise LegacyStoreError(f"{old.describe(LEGACY_INDEX)} indexes no points: there is nothing to migrate")
    dimensions, dtype = _common_shape(old, files)
    layout.create_store(
        new_config,
        columns=layout.default_columns(dimensions),
        dtype=dtype,
        block_id_type="string",
        migrated_from=source,
    )
    by_worker: dict[str, list[str]] = {}
    for path in files:
        by_worker.setdefault(_worker_of(path), []).append(path)
    tasks = [
        Task(
            worker_id,
            len(paths),
            _migrate_worker,
            _WorkerFiles(
                old_config, new_config, worker_id, tuple((p, pairs[p]) for p in paths), dtype.str, max_points_per_file
            ),
        )
        for worker_id, paths in sorted(by_worker.items())
    ]
    with progress_sink(progress, unit="file") as sink:
        results = run_tasks(tasks, workers=workers, sink=sink, client=client, pool=_POOL)
    failures = [result for result in results.values() if isinstance(result, Failure)]
    if failures:
        first = failures[0]
        if first.error is not None:  # the worker's own error says what is wrong
            raise first.error
        advice = "" if first.never_started else ". Run migrate again: it rewrites every worker, to the same store"
        raise MigrationError(f"migrating worker {first.worker_id} of {source} failed: {first.text}{advice}")
    return consolidate(new_config)


def _absolute(config: StorageConfig) -> StorageConfig:
    """A local store by its absolute path: workers may run in another directory (a forkserver, a Dask node)."""
    return dataclasses.replace(config, base_path=config.local_root) if config.is_local else config


@dataclass(frozen=True)
class _WorkerFiles:
    """One original worker's files, with the labels the original's index lists in each, for one migration task."""

    old: StorageConfig
    new: StorageConfig
    worker_id: str
    files: tuple[tuple[str, np.ndarray], ...]
    dtype: str
    max_points_per_file: int


def _migrate_worker(job: _WorkerFiles, report: Callback, should_stop: ShouldStop) -> TaskOutcome:
    """Copy one original worker's files into the worker of the same id, reporting after each file."""
    old = open_storage(job.old)
    started = time.perf_counter()
    labels: set[int] = set()

    def event(state: str, done: int, ingestor: Ingestor) -> ProgressEvent:
        stats = ingestor.stats
        return ProgressEvent(
            job.worker_id,
            state,
            blocks_done=done,
            blocks_total=len(job.files),
            labels_written=len(labels),
            points_written=stats.points,
            files_written=stats.files,
            bytes_written=stats.bytes,
            elapsed=time.perf_counter() - started,
        )

    with Ingestor(job.new, job.worker_id, max_points_per_file=job.max_points_per_file) as ingestor:
        report(event("running", 0, ingestor))
        for done, (path, file_labels) in enumerate(job.files):
            if should_stop():
                raise TaskStopped(f"worker {job.worker_id} stopped: the migration was cancelled")
            _copy_file(old, path, file_labels, ingestor, np.dtype(job.dtype))
            labels.update(file_labels.tolist())
            report(event("running", done + 1, ingestor))
    return TaskOutcome(event("finished", len(job.files), ingestor))


def _check_target(source: str, new: Storage) -> None:
    """Refuse a target that holds anything but an earlier (interrupted) migration of the same store."""
    schema = layout.require_store_or_empty(new, "migrate")
    if schema is not None and schema.metadata.get("migrated_from") != source:
        raise InvalidArgumentError(
            f"{new.describe('')} already holds a pocaduck store (not a migration of {source}): "
            f"migrate writes nothing there. Give a new or empty folder"
        )


def _indexed_pairs(storage: Storage, index: str) -> dict[str, np.ndarray]:
    """Store-relative file → the labels the index lists in it (the original reads only those)."""
    con = duckdb.connect(":memory:")
    try:
        attach_read_only(con, storage.local_copy(index), "legacy_index")
        rows = con.execute(
            "SELECT file_path, list(DISTINCT label::BIGINT) FROM legacy_index.point_cloud_index GROUP BY file_path"
        ).fetchall()
    finally:
        con.close()
    pairs: dict[str, set[int]] = {}
    for recorded, labels in rows:
        pairs.setdefault(_store_relative(recorded), set()).update(labels)
    return {path: np.array(sorted(labels), dtype=np.int64) for path, labels in pairs.items()}


def _common_shape(storage: Storage, paths: list[str]) -> tuple[int, np.dtype]:
    """Point dimensions and one dtype that holds every file's values without loss."""
    dtypes, dimensions = [], None
    for path in paths:
        parquet = pq.ParquetFile(storage.open_input(path))
        dtypes.append(parquet.schema_arrow.field("data").type.value_type.to_pandas_dtype())
        if dimensions is None and parquet.metadata.num_rows:
            first = parquet.read_row_group(0, columns=["data"]).column("data").slice(0, 1)
            dimensions = _points_of(first, storage.describe(path)).shape[1]
    if dimensions is None:
        raise LegacyStoreError("the original store's files hold no points")
    return dimensions, np.result_type(*dtypes)


def _worker_of(path: str) -> str:
    """``worker_3/data/..`` → ``3``; ``optimized/optimize_a/..`` → ``optimized-a``."""
    top, middle = path.split("/")[:2]
    if top == "optimized":
        return "optimized-" + middle.removeprefix("optimize_")
    return top.removeprefix("worker_")


def _copy_file(storage: Storage, path: str, labels: np.ndarray, ingestor: Ingestor, dtype: np.dtype) -> None:
    """Write one original file's indexed rows as one write per (label, block) run, in stored order."""
    table = pq.read_table(storage.open_input(path))
    table = table.filter(pc.is_in(table.column("label"), pa.array(labels, pa.int64())))
    if table.num_rows == 0:
        return
    labels_of_rows = table.column("label").to_numpy().astype(np.uint64)
    if "block_id" in table.column_names:
        blocks_of_rows = table.column("block_id").to_numpy(zero_copy_only=False).astype(str)
    else:
        blocks_of_rows = np.full(table.num_rows, "")
    points = _points_of(table.column("data"), storage.describe(path)).astype(dtype, copy=False)
    order = np.lexsort((blocks_of_rows, labels_of_rows))  # stable: each run keeps its stored order
    labels_of_rows, blocks_of_rows, points = labels_of_rows[order], blocks_of_rows[order], points[order]
    change = (labels_of_rows[1:] != labels_of_rows[:-1]) | (blocks_of_rows[1:] != blocks_of_rows[:-1])
    starts = np.flatnonzero(np.concatenate([[True], change]))
    for start, end in zip(starts, np.append(starts[1:], len(order)), strict=True):
        ingestor.write(int(labels_of_rows[start]), str(blocks_of_rows[start]), points[start:end])
