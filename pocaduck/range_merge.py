"""Consolidation by label ranges: every worker index's rows of one range of labels merged as one executor task.

A label's rows all fall in one range, so the sorted parts put end to end are
the unified index's ``point_index`` and ``labels`` tables, with no global sort.
Each task holds one range (about 4 M rows) in memory, whatever the store's
size, and ranges run on local threads or on Dask (``RangeMerge``).

The tasks share nothing with the consolidating process but the store: each
opens it from its ``StorageConfig``, fetches the worker indexes into its own
cache, and writes its parts into the store's ``building_parts`` folder (objects
under that prefix on a bucket), from which the build reads them back one range
at a time. So Dask workers on other machines need only reach the bucket. A
range run again replaces its own parts; the folder is removed once the index
is assembled, and ``gc`` removes the one of a build that died.

On two cores this is no faster than DuckDB's own sort of everything (see
bench/bench_consolidate.py): its gain is memory, and cores elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import layout
from ._timing import logged_phase
from .config import StorageConfig
from .errors import ConsolidationError, PocaduckError
from .executor import Pool, ShouldStop, Task, TaskOutcome, TaskStopped, local_cpus, raise_first_failure, run_tasks
from .index import attach_read_only, label_summary_sql, union_all
from .progress import Callback, Progress, ProgressEvent, progress_sink
from .replacement import Replacements, source_rows_sql
from .storage import Storage
from .store import Store, open_store

logger = logging.getLogger("pocaduck")


@dataclass(frozen=True)
class RangeMerge:
    """Merge the worker indexes by label ranges as executor tasks: ``workers`` at a time, or on ``client``."""

    workers: int
    client: Any = None
    progress: Progress = None
    retries: int = 0


_RANGE_ROWS = 4_000_000  # index rows a range holds (as the sample predicts them): its task sorts them in memory
_SAMPLE_ROWS = 100_000  # labels sampled to cut the ranges
_POOL: Pool = "threads"  # DuckDB and Parquet release the GIL; threads need no __main__ guard
_MAX_LABEL = 2**64 - 1


def merge_label_ranges(
    con: duckdb.DuckDBPyConnection,
    store: Store,
    schema: layout.Schema,
    aliases: list[str],
    sources: list[tuple[str, int]],
    folder: str,
    split: RangeMerge,
    replacements: Replacements | None = None,
) -> list[tuple[str, str]]:
    """Merge every source's rows range by range as executor tasks; return each range's Parquet parts, in label order.

    ``sources`` are the store keys of the indexes attached on ``con`` as ``aliases``, with
    their file id offsets. Each task writes a range's ``point_index`` rows and ``labels``
    summary, sorted, into the store ``folder`` (see :func:`range_parts`): a label's rows
    all fall in one range, so the parts end to end are the tables. Rows of replaced
    blocks are dropped as ``replacements`` says (see :mod:`pocaduck.replacement`).
    """
    labels = union_all(aliases, "SELECT label FROM {}.point_index")
    with logged_phase("consolidation", "sample labels"):
        rows = sum(con.execute(f"SELECT count(*) FROM {alias}.point_index").fetchone()[0] for alias in aliases)
        sample = con.execute(
            f"SELECT label FROM ({labels}) USING SAMPLE reservoir({_SAMPLE_ROWS} ROWS) REPEATABLE (1)"
        ).fetchnumpy()["label"]
    ranges = label_ranges(sample, max(split.workers, -(-rows // _RANGE_ROWS)))
    threads = None if split.client is not None else max(1, local_cpus() // min(split.workers, len(ranges)))
    parts = [(f"{folder}/{n:06d}.rows.parquet", f"{folder}/{n:06d}.labels.parquet") for n in range(len(ranges))]
    tasks = [
        Task(
            _range_name(n),
            1,
            _range_task,
            (n, store.config, schema, sources, first, last, parts[n], threads, replacements),
        )
        for n, (first, last) in enumerate(ranges)
    ]
    with progress_sink(split.progress, unit="range") as sink, logged_phase("consolidation", "merge ranges"):
        results = run_tasks(
            tasks, workers=split.workers, sink=sink, retries=split.retries, client=split.client, pool=_POOL
        )
    unchanged = "the unified index in force is unchanged"
    raise_first_failure(
        results,
        lambda first: f"consolidation {first.worker_id} failed: {first.text}",
        f"run the consolidation again: {unchanged}",
        ConsolidationError,
        ConsolidationError(f"the consolidation of {store.path} was cancelled; {unchanged}: run it again"),
    )
    return parts


@contextlib.contextmanager
def range_parts(storage: Storage, build_id: str) -> Iterator[str]:
    """The store folder a build's range tasks write their parts into; removed on leaving, whatever happened.

    Its lock, held meanwhile, tells ``gc`` the build is alive (seen from this
    machine only on a bucket, like every lock there).

    Example::

        with range_parts(store.storage, build_id) as folder:
            parts = merge_label_ranges(con, store, schema, aliases, sources, folder, split)
            assemble_ranges(con, store.storage, parts)
    """
    folder = layout.building_parts(build_id)
    with storage.lock(layout.building_parts_lock(build_id)):
        try:
            yield folder
        finally:
            try:
                storage.delete_tree(folder)
            except (OSError, PocaduckError) as error:  # the index does not need them: say so, and go on
                logger.warning("the label ranges in %s were not removed (%s): gc removes them", folder, error)


def assemble_ranges(con: duckdb.DuckDBPyConnection, storage: Storage, parts: list[tuple[str, str]]) -> None:
    """Fill ``point_index`` and make ``labels`` from the ranges' parts, read through the store in label order.

    Each table is one statement over a stream of the parts' row groups (ranged reads on a bucket): memory holds
    one row group, and DuckDB writes the table as it would from one file (an INSERT per part made it 1.7x larger).
    """
    con.register("range_rows", _row_groups(storage, [rows for rows, _ in parts]))
    con.execute("INSERT INTO point_index SELECT * FROM range_rows")
    con.register("range_labels", _row_groups(storage, [labels for _, labels in parts]))
    con.execute("CREATE TABLE labels AS SELECT * FROM range_labels")
    con.unregister("range_rows")
    con.unregister("range_labels")


def _row_groups(storage: Storage, keys: list[str]) -> pa.RecordBatchReader:
    schema = pq.ParquetFile(storage.open_input(keys[0])).schema_arrow
    batches = (batch for key in keys for batch in pq.ParquetFile(storage.open_input(key)).iter_batches())
    return pa.RecordBatchReader.from_batches(schema, batches)


def label_ranges(sample: np.ndarray, count: int) -> list[tuple[int, int]]:
    """``count`` (or fewer) inclusive label ranges covering every uint64, cut at quantiles of ``sample``.

    >>> label_ranges(np.array([1, 2, 3, 4, 5, 6], np.uint64), 3)
    [(0, 2), (3, 4), (5, 18446744073709551615)]
    >>> label_ranges(np.array([], np.uint64), 2)
    [(0, 18446744073709551615)]
    """
    ordered = np.sort(sample)
    cuts = ordered[[len(ordered) * n // count for n in range(1, count)]] if len(ordered) else ordered
    cuts = [cut for cut in np.unique(cuts).tolist() if cut > 0]
    return list(zip([0, *cuts], [cut - 1 for cut in cuts] + [_MAX_LABEL], strict=True))


def _range_name(number: int) -> str:
    return f"range-{number:06d}"


def merge_label_range(
    storage_config: StorageConfig,
    schema: layout.Schema,
    sources: list[tuple[str, int]],
    first_label: int,
    last_label: int,
    parts: tuple[str, str],
    threads: int | None = None,
    replacements: Replacements | None = None,
) -> int:
    """Write the rows of labels ``first_label``..``last_label`` of every source index, and their summary, as Parquet.

    ``sources`` are store keys of worker (or compaction) indexes with the offset
    added to their file ids; ``parts`` the two store keys to write, rows and labels,
    each sorted. It needs only the store, so it runs on any machine that reaches it;
    running it twice replaces the same files. Returns the rows written.

    Example::

        merge_label_range(StorageConfig("s3://bucket/store"), schema, [("workers/w0/…/index.duckdb", 0)], 0, 999,
                          (".unified_index.duckdb.building-5f0c.parts/000000.rows.parquet", "….labels.parquet"))
        # -> 5012
    """
    storage = open_store(storage_config).storage
    staging = storage.staging_dir(parts[0].rsplit("/", 1)[0])
    settings = {"temp_directory": staging} | ({"threads": threads} if threads else {})
    con = duckdb.connect(config=settings)
    try:
        aliases = [f"source_{number}" for number in range(len(sources))]
        for alias, (key, _) in zip(aliases, sources, strict=True):
            attach_read_only(con, storage.local_copy(key), alias)
        if replacements is not None:
            con.register("replacements", replacements.in_force)
        select, params = source_rows_sql(
            aliases,
            [offset for _, offset in sources],
            replacements,
            "label BETWEEN ?::UBIGINT AND ?::UBIGINT",
            (first_label, last_label),
        )
        rows = con.sql(f"SELECT * FROM ({select}) ORDER BY label, file_id, row_offset", params=params).to_arrow_table()
        con.register("range_rows", rows)
        summary = con.sql(label_summary_sql(schema, "range_rows")).to_arrow_table()
    finally:
        con.close()
    for table, key in ((rows, parts[0]), (summary, parts[1])):
        # A name of its own: an attempt of this range still running elsewhere writes beside it, not into it.
        written = os.path.join(staging, f"{key.rsplit('/', 1)[1]}.{uuid.uuid4().hex}.partial")
        pq.write_table(table, written, compression="lz4")
        storage.publish(written, key)
    return rows.num_rows


def _range_task(job: tuple[Any, ...], report: Callback, should_stop: ShouldStop) -> TaskOutcome:
    """One label range as an executor task: it reports that it runs, merges the range, and ends with its rows."""
    number, config, schema, sources, first_label, last_label, parts, threads, replacements = job
    name = _range_name(number)
    if should_stop():
        raise TaskStopped(f"{name} was not started: the consolidation was cancelled")
    report(ProgressEvent(name, "running", blocks_total=1))
    started = time.perf_counter()
    rows = merge_label_range(config, schema, sources, first_label, last_label, parts, threads, replacements)
    final_event = ProgressEvent(name, "finished", blocks_done=1, blocks_total=1, elapsed=time.perf_counter() - started)
    return TaskOutcome(final_event, rows)
