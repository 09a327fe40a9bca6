"""Migration: a store of the original pocaduck (0.1.x) converted exactly into this library's layout.

Every row the original's index refers to is copied with its label, block id and
values in their stored dtype; each original worker becomes a worker of the new
store, a task on the executor.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import layout
from .arguments import optional_positive_int, positive_int
from .config import StorageConfig
from .consolidate import consolidate
from .errors import InvalidArgumentError, LegacyStoreError, MigrationError
from .executor import Failure, Pool, ShouldStop, Task, TaskOutcome, TaskStopped, run_tasks
from .index import attach_read_only
from .ingest import Ingestor
from .legacy import points_of, store_relative
from .progress import Callback, Progress, ProgressEvent, check_progress, progress_sink
from .storage import Storage
from .store import Store, create_store, open_store

logger = logging.getLogger("pocaduck")

_POOL: Pool = "processes"  # local workers of a migration: see bench/bench_executors.py


def migrate(
    old_store: Store | StorageConfig | str | os.PathLike,
    new_store: Store | StorageConfig | str | os.PathLike,
    *,
    max_points_per_file: int = 10_000_000,
    progress: Progress = "auto",
    workers: int | None = 1,
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
    ``workers`` at a time (None: one per CPU) in local processes (from a script, call this under
    ``if __name__ == "__main__":``), or on a ``dask.distributed.Client`` when
    one is given; the result is the same. Processes, not threads: copying a
    file makes a Python call per (label, block) run, which holds the GIL, and
    threads migrated up to a third slower (bench/bench_executors.py).
    ``progress`` (a callable; ``"tqdm"`` for bars; by default bars in a notebook
    and nothing elsewhere; ``False`` for none) receives each worker's
    :class:`~pocaduck.ProgressEvent` s, one per file converted.

    Example::

        migrate("/data/old_store", "/data/new_store", workers=4, progress="tqdm")
        # -> '/data/new_store/unified_index.duckdb'
    """
    max_points_per_file = positive_int(max_points_per_file, "max_points_per_file")
    workers = optional_positive_int(workers, "workers", "original workers converted at once; None for one per CPU")
    progress = check_progress(progress)
    source = open_store(old_store).path  # as given: an interrupted migration is recognised by it
    old_config, new_config = open_store(old_store).config.absolute(), open_store(new_store).config.absolute()
    old_opened = open_store(old_config)
    old = old_opened.storage
    if not old.root_exists() or old_opened.kind != "original":
        raise LegacyStoreError(
            f"{source} is not a store written by the original pocaduck "
            f"(no {layout.LEGACY_INDEX} or {layout.LEGACY_OPTIMIZED_INDEX}; run the original's consolidate_indexes first)"
        )
    _check_target(source, open_store(new_config))
    optimized_only = not old.exists(layout.LEGACY_INDEX)
    pairs = _indexed_pairs(old, layout.LEGACY_OPTIMIZED_INDEX if optimized_only else layout.LEGACY_INDEX)
    files = sorted(pairs)
    if not files:
        raise LegacyStoreError(f"{old.describe(layout.LEGACY_INDEX)} indexes no points: there is nothing to migrate")
    dimensions, dtype = _common_shape(old, files)
    create_store(
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
    old = open_store(job.old).storage
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


def _check_target(source: str, new: Store) -> None:
    """Refuse a target that holds anything but an earlier (interrupted) migration of the same store."""
    schema = new.require_or_empty("migrate")
    if schema is not None and schema.metadata.get("migrated_from") != source:
        raise InvalidArgumentError(
            f"{new.storage.describe('')} already holds a pocaduck store (not a migration of {source}): "
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
        pairs.setdefault(store_relative(recorded), set()).update(labels)
    return {path: np.array(sorted(labels), dtype=np.int64) for path, labels in pairs.items()}


def _common_shape(storage: Storage, paths: list[str]) -> tuple[int, np.dtype]:
    """Point dimensions and one dtype that holds every file's values without loss."""
    dtypes, dimensions = [], None
    for path in paths:
        parquet = pq.ParquetFile(storage.open_input(path))
        dtypes.append(parquet.schema_arrow.field("data").type.value_type.to_pandas_dtype())
        if dimensions is None and parquet.metadata.num_rows:
            first = parquet.read_row_group(0, columns=["data"]).column("data").slice(0, 1)
            dimensions = points_of(first, storage.describe(path)).shape[1]
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
    """Write one original file's indexed rows, one ``write_block`` per block, each label's rows in stored order."""
    table = pq.read_table(storage.open_input(path))
    table = table.filter(pc.is_in(table.column("label"), pa.array(labels, pa.int64())))
    if table.num_rows == 0:
        return
    labels_of_rows = table.column("label").to_numpy().astype(np.uint64)
    if "block_id" in table.column_names:
        blocks_of_rows = table.column("block_id").to_numpy(zero_copy_only=False).astype(str)
    else:
        blocks_of_rows = np.full(table.num_rows, "")
    points = points_of(table.column("data"), storage.describe(path)).astype(dtype, copy=False)
    order = np.lexsort((labels_of_rows, blocks_of_rows))  # stable: each (label, block) run keeps its stored order
    labels_of_rows, blocks_of_rows, points = labels_of_rows[order], blocks_of_rows[order], points[order]
    starts = np.flatnonzero(np.concatenate([[True], blocks_of_rows[1:] != blocks_of_rows[:-1]]))
    for start, end in zip(starts, np.append(starts[1:], len(order)), strict=True):
        ingestor.write_block(str(blocks_of_rows[start]), labels_of_rows[start:end], points[start:end])
