"""Compaction: rewrite a store so each label's points sit together, sorted by label, in a few large files.

After ingestion a label's points are scattered over every worker's files.
Compaction reads them through the unified index and writes a new *generation*
under ``compacted/<generation>/``, described by the same tables as any worker
index (one ``point_index`` row per (label, block), block ids kept), so queries
use it without a special path. The work is split into shards, each a contiguous
label range written as one file by one task of :mod:`pocaduck.executor`.
``compact(store, mapping=name)`` orders the labels by their body at that
mapping version instead (see ``_body_order``): a body's supervoxels are
adjacent in one file and read like one label, and the index stays keyed by
supervoxel, so every other version still reads exactly.

It is resumable and atomic. The generation's name is a fingerprint of what it
compacts (the sessions the current index covers, and the settings), so running
it again after a kill finds the same folder and only writes the shards that
have no completion marker yet. Nothing refers to the generation until the last
step publishes a new unified index over it with one atomic replace: readers see
the old layout or the new one, and readers holding the old one keep working
until they reopen (the old files stay until :func:`pocaduck.collect_garbage`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import _body_order, layout
from .arguments import flag, non_negative_int, optional_positive_int, positive_int
from .config import StorageConfig
from .consolidate import publish_unified_index, write_failures_reported
from .errors import CompactionBusyError, CompactionCancelledError, CompactionError, StoreNotConsolidatedError
from .executor import Failure, Pool, ShouldStop, Task, TaskOutcome, TaskStopped, raise_first_failure, run_tasks
from .index import AttachedIndex, attach_read_only, compaction_record, create_worker_tables, file_locations
from .pointfile import PointFiles, check_compression, chunk_index_rows, write_point_file
from .progress import Callback, Progress, ProgressEvent, check_progress, progress_sink
from .replacement import REPLACED_TABLE
from .sampling import order_marker, stored_order
from .storage import Storage
from .store import Store, open_store

logger = logging.getLogger("pocaduck")

DEFAULT_POINTS_PER_FILE = 4_000_000
_PLAN = "plan.json"
_SOURCE = "source.duckdb"
_SHARDS = "shards"
_ORDER = "order.parquet"
_POOL: Pool = "threads"  # local shards run in threads: see bench/bench_executors.py


@dataclass(frozen=True)
class CompactionReport:
    """What a compaction did; ``generation`` is None when the store was already compact."""

    generation: str | None
    shards: int = 0
    shards_reused: int = 0
    points_read: int = 0
    points_written: int = 0
    files_written: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    deduplicated: bool = False
    mapping: str | None = None  # the mapping version whose bodies it laid out contiguously; None: by label

    @property
    def points_per_second(self) -> float:
        return self.points_read / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "points_per_second": round(self.points_per_second)}


def compact(
    storage_config: Store | StorageConfig | str | os.PathLike,
    *,
    workers: int | None = None,
    client: Any = None,
    deduplicate: bool = False,
    points_per_file: int = DEFAULT_POINTS_PER_FILE,
    row_group_size: int = layout.ROW_GROUP_SIZE,
    compression: str | None = None,
    payload: str = layout.DEFAULT_PAYLOAD,
    progress: Progress = "auto",
    retries: int = 0,
    stop: threading.Event | None = None,
    mapping: str | None = None,
) -> CompactionReport:
    """Rewrite the consolidated store so each label's points are contiguous, then switch to it atomically.

    Shards run in ``workers`` threads of this process (default: one per CPU;
    1 runs them one after another), or on a ``dask.distributed.Client`` when
    one is given; a shard that fails runs again up to ``retries`` times.
    Threads, not processes: a shard's work is mostly Arrow, Parquet and numpy,
    which release the GIL, and threads compacted as fast end to end (faster on
    small stores, which they spare the process start-up; see
    bench/bench_executors.py) and need no ``if __name__ == "__main__":`` guard.
    ``deduplicate=True`` keeps one copy of identical points of a label (the
    first, in block order); by default every point is kept. ``payload``
    picks the files' format: ``"parquet"`` (the default) or ``"arrow"``, Arrow
    IPC files whose labels read as slices of a memory-mapped file (see the
    guide's "Parquet or Arrow IPC: which to pick"); ``compression=None`` is the
    payload's default codec (LZ4 for Parquet, uncompressed for Arrow; Arrow
    also takes ``"lz4"`` and ``"zstd"``). Compacting again with another payload
    rewrites the store in it. ``progress`` (a callable; ``"tqdm"`` for bars;
    by default bars in a notebook and nothing elsewhere; ``False`` for none) receives a
    :class:`~pocaduck.ProgressEvent` per shard as it is queued, runs and ends.
    Setting ``stop`` (from another thread), or Ctrl-C, stops the compaction
    after the shards being written, with :class:`CompactionCancelledError`
    (or KeyboardInterrupt); a stopped, failed or killed run resumes where it
    stopped when called again with the same settings.

    ``mapping=name`` lays the labels out by their body at mapping version
    ``name`` (then by label): each body's supervoxels adjacent in one file (a
    body larger than ``points_per_file`` is cut between supervoxels), so
    ``Query(store, mapping=name).get_points(body)`` reads one range, as a plain
    label does. The index stays keyed by supervoxel: every version reads
    exactly, a later one reading a supervoxel it moved from where it lies.
    ``pocaduck info`` shows the mapping a store was compacted by; compacting
    again with another mapping, or none, rewrites the store in that order.

    >>> import tempfile
    >>> from pocaduck import Ingestor, Query, consolidate
    >>> store = tempfile.mkdtemp()
    >>> for worker in range(2):
    ...     with Ingestor(store, worker_id=worker) as ingestor:
    ...         ingestor.write(5, f"block-{worker}", np.full((2, 3), worker))
    >>> _ = consolidate(store)
    >>> compact(store, workers=1).points_written
    4
    >>> with Query(store) as query:
    ...     query.get_points(5).tolist(), query.get_blocks_for_label(5)
    ([[0, 0, 0], [0, 0, 0], [1, 1, 1], [1, 1, 1]], ['block-0', 'block-1'])
    """
    workers = optional_positive_int(workers, "workers", "shards written at once; None for one per CPU")
    deduplicate = flag(deduplicate, "deduplicate")
    points_per_file = positive_int(points_per_file, "points_per_file")
    row_group_size = positive_int(row_group_size, "row_group_size")
    retries = non_negative_int(retries, "retries")
    codec = check_compression(payload, compression)
    progress = check_progress(progress)
    store = open_store(storage_config)
    config, storage = store.config, store.storage
    schema = store.require("compaction")
    if not storage.exists(layout.UNIFIED_INDEX):
        raise StoreNotConsolidatedError(
            f"{config.base_path} has no unified index: run `pocaduck consolidate STORE` before compacting"
        )
    version = None if mapping is None else _body_order.mapping_version(storage, mapping)
    settings = {
        "deduplicate": bool(deduplicate),
        "points_per_file": int(points_per_file),
        "row_group_size": int(row_group_size),
        "compression": codec,
        "payload": payload,
        # Only when given: a compaction by label keeps the generation names it had before mappings existed.
        **({} if version is None else {"mapping": version.name, "mapping_created": version.created}),
    }
    started = time.perf_counter()
    # The report wraps the lock too: on a read-only store, taking it is the first write that fails.
    with write_failures_reported(storage, "compaction"), storage.lock(layout.COMPACTION_LOCK) as free:
        if not free:
            raise CompactionBusyError(f"another compaction or gc is running on {config.base_path}; wait for it")
        generation = _prepare(store, settings, version)
        if generation is None:
            return CompactionReport(None, mapping=mapping, deduplicated=bool(deduplicate))
        plan = json.loads(storage.read_bytes(_plan_path(generation)))
        pending = [shard for shard in range(len(plan["shards"])) if not storage.exists(_marker(generation, shard))]
        tasks = [Task(_shard_name(shard), 1, _shard_task, (config, generation, shard)) for shard in pending]
        with progress_sink(progress, unit="shard") as sink:
            results = run_tasks(
                tasks,
                workers=workers,
                sink=sink,
                stop=stop,
                retries=retries,
                client=client,
                pool=_POOL,
            )
        _raise_failures(config, results, len(plan["shards"]) - len(pending))
        totals = _assemble(storage, schema, generation, plan)
        publish_unified_index(store, lambda: (schema, store.worker_states()[0], generation))
        _tidy(storage, generation)
    return CompactionReport(
        generation,
        mapping=mapping,
        shards=len(plan["shards"]),
        shards_reused=len(plan["shards"]) - len(pending),
        seconds=time.perf_counter() - started,
        deduplicated=bool(deduplicate),
        **totals,
    )


# -- planning ----------------------------------------------------------------


def _plan_path(generation: str) -> str:
    return f"{layout.compaction_dir(generation)}/{_PLAN}"


def _source_path(generation: str) -> str:
    return f"{layout.compaction_dir(generation)}/{_SOURCE}"


def _order_path(generation: str) -> str:
    return f"{layout.compaction_dir(generation)}/{_ORDER}"


def _marker(generation: str, shard: int) -> str:
    return f"{layout.compaction_dir(generation)}/{_SHARDS}/{shard:06d}.parquet"


def _prepare(store: Store, settings: dict[str, Any], version: _body_order.MappingVersion | None) -> str | None:
    """Snapshot the current index and plan a generation for it, or find the one a killed run left.

    Returns None when the store is already compact with these settings (and this mapping ``version``, if any).
    """
    storage = store.storage
    staging = storage.staging_dir(layout.COMPACTED)
    snapshot = os.path.join(staging, f".source-{uuid.uuid4().hex}.duckdb")
    # The unified index is replaced by rename, never modified, so one copy is a consistent snapshot.
    shutil.copyfile(storage.local_copy(layout.UNIFIED_INDEX), snapshot)
    try:
        con = duckdb.connect(":memory:")
        attach_read_only(con, snapshot, "source")
        try:
            in_force = store.compaction_in_force()
            if in_force is not None and _already_compact(con, in_force, settings):
                _tidy(storage, in_force)
                return None
            sessions = con.execute("SELECT worker_id, session_id FROM source.workers ORDER BY ALL").fetchall()
            fingerprint = json.dumps({"sessions": sessions, "compaction": in_force, **settings}, sort_keys=True)
            generation = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
            if storage.exists(_plan_path(generation)):
                logger.info("compaction %s: resuming the run that was interrupted", generation)
                return generation
            labels = con.execute("SELECT label, point_count FROM source.labels ORDER BY label").fetchnumpy()
        finally:
            con.close()
        label_ids, counts = labels["label"].astype(np.uint64), labels["point_count"].astype(np.int64)
        if version is None:
            shards = _split_labels(label_ids, counts, settings)
        else:
            label_ids, counts, bodies = _body_order.by_body(storage, version, label_ids, counts)
            shards = _split_bodies(label_ids, counts, bodies, settings)
            _body_order.write_order(storage, _order_path(generation), label_ids)
        storage.publish(snapshot, _source_path(generation))
        plan = {"generation": generation, **settings, "shards": shards}
        storage.write_bytes(_plan_path(generation), json.dumps(plan).encode())
        return generation
    finally:
        if os.path.exists(snapshot):
            os.unlink(snapshot)


def _already_compact(con: duckdb.DuckDBPyConnection, generation: str, settings: dict[str, Any]) -> bool:
    """True when every file of the index belongs to ``generation``, in the payload asked for, and it was written
    with the same de-dup choice, in the same order (by label, or by the same mapping version)."""
    record = compaction_record(con, "source")
    if record is None or record["mapping"] != settings.get("mapping"):
        return False
    (outside,) = con.execute(
        "SELECT count(*) FROM source.files WHERE NOT (starts_with(path, ?) AND ends_with(path, ?))",
        [layout.compaction_dir(generation) + "/", layout.PAYLOADS[settings["payload"]]],
    ).fetchone()
    return outside == 0 and record["deduplicated"] == settings["deduplicate"]


def _cut(counts: np.ndarray, points_per_file: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut units of ``counts`` points into runs of about ``points_per_file``: each run's first and last unit, points.

    A unit larger than ``points_per_file`` gets a run of its own.

    >>> [a.tolist() for a in _cut(np.array([3, 3, 9, 1]), 6)]
    [[0, 2, 3], [1, 2, 3], [6, 9, 1]]
    """
    before = np.cumsum(counts) - counts
    run_of_unit = np.unique(before // points_per_file, return_inverse=True)[1]
    starts = np.flatnonzero(np.diff(run_of_unit, prepend=-1))
    ends = np.append(starts[1:], len(counts)) - 1
    return starts, ends, np.add.reduceat(counts, starts)


def _split_labels(labels: np.ndarray, counts: np.ndarray, settings: dict[str, Any]) -> list[dict[str, int]]:
    """Contiguous label ranges of about ``points_per_file`` points each (a bigger label gets a shard of its own)."""
    if len(labels) == 0:
        return []
    starts, ends, points = _cut(counts, settings["points_per_file"])
    return [
        {"first_label": int(labels[s]), "last_label": int(labels[e]), "points": int(p)}
        for s, e, p in zip(starts, ends, points, strict=True)
    ]


def _split_bodies(
    labels: np.ndarray, counts: np.ndarray, bodies: np.ndarray, settings: dict[str, Any]
) -> list[dict[str, int]]:
    """Slices of the (body, label) order of about ``points_per_file`` points, cut only between bodies (or inside a
    body larger than that): ``first`` and ``stop`` are positions in the order, the labels for the log."""
    if len(labels) == 0:
        return []
    unit_starts = _body_order.groups(bodies, counts, settings["points_per_file"])
    unit_counts = np.add.reduceat(counts, unit_starts)
    unit_stops = np.append(unit_starts[1:], len(labels))
    starts, ends, points = _cut(unit_counts, settings["points_per_file"])
    return [
        {
            "first": int(unit_starts[s]),
            "stop": int(unit_stops[e]),
            "first_label": int(labels[unit_starts[s]]),
            "last_label": int(labels[unit_stops[e] - 1]),
            "points": int(p),
        }
        for s, e, p in zip(starts, ends, points, strict=True)
    ]


# -- one shard ---------------------------------------------------------------


def compact_shard(storage_config: Store | StorageConfig, generation: str, shard: int) -> dict[str, int]:
    """Write one shard of a planned compaction: its label range as one file, then its completion marker.

    A plain function of picklable arguments, so any executor can run it; running
    it twice rewrites the same file. Returns the shard's counts.

    Example::

        compact_shard(StorageConfig("/data/store"), "3f2a9c0d51e7b864", 0)
        # -> {'shard': 0, 'labels': 812, 'segments': 40600, 'points_read': 4000000, 'points': 4000000, ...}
    """
    started = time.perf_counter()
    store = open_store(storage_config)
    storage = store.storage
    schema = store.require("compaction")
    plan = json.loads(storage.read_bytes(_plan_path(generation)))
    spec = plan["shards"][shard]
    source = AttachedIndex(storage.local_copy(_source_path(generation)))
    try:
        files = file_locations(source.cursor)
        pieces = _pieces(source.cursor, storage, generation, spec)
    finally:
        source.close()
    counts = pieces["point_count"].astype(np.int64)
    points = PointFiles(storage, schema, files).read_rows(
        pieces["file_id"].astype(np.int64), pieces["row_offset"].astype(np.int64), counts
    )
    labels = pieces["label"].astype(np.uint64)
    blocks = np.asarray(pieces["block_id"])
    starts = np.flatnonzero(np.concatenate([[True], (labels[1:] != labels[:-1]) | (blocks[1:] != blocks[:-1])]))
    segment_labels, segment_blocks = labels[starts], blocks[starts]
    segment_counts = np.add.reduceat(counts, starts) if len(starts) else counts
    points_read = len(points)
    if plan["deduplicate"]:
        segment_of_point = np.repeat(np.arange(len(starts)), segment_counts)
        keep = _first_occurrences(np.repeat(segment_labels, segment_counts), points)
        points = points[keep]
        segment_counts = np.bincount(segment_of_point[keep], minlength=len(starts)).astype(np.int64)
        nonempty = segment_counts > 0
        segment_labels, segment_blocks, segment_counts = (
            segment_labels[nonempty],
            segment_blocks[nonempty],
            segment_counts[nonempty],
        )
    points, segment_labels, segment_blocks, segment_counts = _in_sample_order(
        points, segment_labels, segment_blocks, segment_counts
    )
    block_type = pa.string() if schema.block_id_type == "string" else pa.int64()
    block_column = pa.array(segment_blocks, block_type)
    values = np.ascontiguousarray(points.T)
    path = layout.compaction_file(generation, shard, plan.get("payload", layout.DEFAULT_PAYLOAD))
    byte_size, file_checksum = write_point_file(
        storage,
        storage.staging_dir(layout.compaction_dir(generation)),
        path,
        schema,
        segment_labels,
        block_column,
        segment_counts,
        values,
        row_group_size=plan["row_group_size"],
        compression=plan["compression"],
        metadata=order_marker(),
    )
    rows = chunk_index_rows(schema, segment_labels, block_column, shard, segment_counts, values)
    result = {
        "shard": shard,
        "labels": len(np.unique(segment_labels)),
        "segments": len(segment_labels),
        "points_read": points_read,
        "points": len(points),
        "bytes": byte_size,
    }
    file_row = {
        "path": path,
        "row_count": len(points),
        "row_group_size": plan["row_group_size"],
        "byte_size": byte_size,
        "checksum": file_checksum,
    }
    marker = rows.replace_schema_metadata({"file": json.dumps(file_row), "result": json.dumps(result)})
    buffer = io.BytesIO()
    pq.write_table(marker, buffer)
    storage.write_bytes(_marker(generation, shard), buffer.getvalue())
    return {**result, "seconds": time.perf_counter() - started}


def _pieces(
    cursor: duckdb.DuckDBPyConnection, storage: Storage, generation: str, spec: dict[str, int]
) -> dict[str, np.ndarray]:
    """The shard's ``point_index`` rows, label after label in the shard's order, each label's by block and place."""
    if "first" not in spec:  # by label: a label range
        return cursor.execute(
            "SELECT label, block_id, file_id, row_offset, point_count FROM point_index "
            "WHERE label BETWEEN ?::UBIGINT AND ?::UBIGINT ORDER BY label, block_id, file_id, row_offset",
            [spec["first_label"], spec["last_label"]],
        ).fetchnumpy()
    labels = _body_order.read_order(storage, _order_path(generation), spec["first"], spec["stop"])
    order = pa.table({"label": pa.array(labels, pa.uint64()), "position": np.arange(len(labels), dtype=np.int64)})
    cursor.register("shard_order", order)
    try:
        return cursor.execute(
            "SELECT p.label, p.block_id, p.file_id, p.row_offset, p.point_count FROM point_index p "
            "JOIN shard_order o ON p.label = o.label ORDER BY o.position, p.block_id, p.file_id, p.row_offset"
        ).fetchnumpy()
    finally:
        cursor.unregister("shard_order")


def _in_sample_order(
    points: np.ndarray, labels: np.ndarray, blocks: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The shard's rows in the stored sample order (see ``sampling``), and the (label, block) runs they form.

    A label of several levels has each block's rows in every level, so it gets
    one index row per (label, level, block) run; its multiset of points and
    blocks is unchanged, and de-duplication, done before, is untouched.
    """
    segment_of_point = np.repeat(np.arange(len(counts)), counts)
    order = stored_order(np.repeat(labels, counts), points)
    if (order == np.arange(len(order))).all():
        return points, labels, blocks, counts
    segment_of_point = segment_of_point[order]
    starts = np.flatnonzero(np.concatenate([[True], segment_of_point[1:] != segment_of_point[:-1]]))
    runs = segment_of_point[starts]
    return points[order], labels[runs], blocks[runs], np.diff(np.append(starts, len(order)))


def _first_occurrences(point_labels: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Mask keeping the first of every run of identical (label, point) rows, in the given order."""
    order = np.lexsort((*points.T[::-1], point_labels))  # stable: equal rows stay in their given order
    ordered_points, ordered_labels = points[order], point_labels[order]
    repeat = (ordered_labels[1:] == ordered_labels[:-1]) & (ordered_points[1:] == ordered_points[:-1]).all(axis=1)
    keep = np.ones(len(points), dtype=bool)
    keep[order[1:][repeat]] = False
    return keep


# -- running shards ----------------------------------------------------------


def _shard_name(shard: int) -> str:
    return f"compact-{shard:06d}"


def _shard_task(job: tuple[StorageConfig, str, int], report: Callback, should_stop: ShouldStop) -> TaskOutcome:
    """One shard as an executor task: it reports that it runs, writes the shard, and ends with its counts."""
    config, generation, shard = job
    if should_stop():
        raise TaskStopped(f"shard {shard} was not started: the compaction was cancelled")
    report(ProgressEvent(_shard_name(shard), "running", blocks_total=1))
    result = compact_shard(config, generation, shard)
    logger.info("compaction %s: shard %d done (%d points)", generation, shard, result["points"])
    final_event = ProgressEvent(
        _shard_name(shard),
        "finished",
        blocks_done=1,
        blocks_total=1,
        labels_written=result["labels"],
        points_written=result["points"],
        files_written=1,
        bytes_written=result["bytes"],
        elapsed=result["seconds"],
    )
    return TaskOutcome(final_event, result)


def _raise_failures(config: StorageConfig, results: dict[str, Any], reused: int) -> None:
    """Stop with an error saying what went wrong and what helps: re-running resumes from the shards written."""
    written = reused + sum(not isinstance(result, Failure) for result in results.values())
    resumes = f"it resumes from the {written} shards already written"
    raise_first_failure(
        results,
        lambda first: f"compaction shard {int(first.worker_id.rsplit('-', 1)[1])} failed: {first.text}",
        f"run the compaction again: {resumes}",
        CompactionError,
        CompactionCancelledError(
            f"the compaction of {config.base_path} was cancelled; run it again with the same settings: {resumes}"
        ),
    )


# -- publishing --------------------------------------------------------------


def _assemble(storage: Storage, schema: layout.Schema, generation: str, plan: dict[str, Any]) -> dict[str, int]:
    """Build and publish the generation's own index from the shard markers; return the totals."""
    staging = storage.staging_dir(layout.compaction_dir(generation))
    built = os.path.join(staging, f".index-{uuid.uuid4().hex}.duckdb")
    totals = {"points_read": 0, "points_written": 0, "files_written": 0, "bytes_written": 0}
    con = duckdb.connect(built)
    try:
        create_worker_tables(con, schema)
        for shard in range(len(plan["shards"])):
            marker = pq.read_table(storage.open_input(_marker(generation, shard)))
            metadata = marker.schema.metadata
            file_row, result = json.loads(metadata[b"file"]), json.loads(metadata[b"result"])
            con.execute(
                "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?)",
                [
                    shard,
                    file_row["path"],
                    file_row["row_count"],
                    file_row["row_group_size"],
                    file_row["byte_size"],
                    file_row.get("checksum"),  # absent from a shard written before checksums were recorded
                ],
            )
            con.register("shard_rows", marker.replace_schema_metadata(None))
            con.execute("INSERT INTO point_index SELECT * FROM shard_rows")
            con.unregister("shard_rows")
            totals["points_read"] += result["points_read"]
            totals["points_written"] += result["points"]
            totals["files_written"] += 1
            totals["bytes_written"] += result["bytes"]
        attach_read_only(con, storage.local_copy(_source_path(generation)), "source")
        con.execute("CREATE TABLE workers AS SELECT * FROM source.workers ORDER BY worker_id")
        # The replacements it applied: a later consolidation keeps its rows of those blocks unless replaced again.
        if con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'source' AND table_name = ?",
            [REPLACED_TABLE],
        ).fetchone()[0]:
            con.execute(f"CREATE TABLE {REPLACED_TABLE} AS SELECT * FROM source.{REPLACED_TABLE}")
        con.execute("DETACH source")
        con.execute(
            "CREATE TABLE compaction AS SELECT ? AS generation, ? AS deduplicated, ?::BIGINT AS points_read, "
            "?::BIGINT AS points_written, ?::BIGINT AS shard_count, now() AS compacted_at, ?::VARCHAR AS mapping",
            [
                generation,
                plan["deduplicate"],
                totals["points_read"],
                totals["points_written"],
                len(plan["shards"]),
                plan.get("mapping"),
            ],
        )
        con.execute("CHECKPOINT")
        con.close()
        storage.publish(built, layout.compaction_index(generation))
    finally:
        con.close()
        for leftover in (built, built + ".wal"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return totals


def _tidy(storage: Storage, generation: str) -> None:
    """Remove what only building the generation needed, once the unified index uses it."""
    for name in (_PLAN, _SOURCE, _SHARDS, _ORDER):
        storage.delete_tree(f"{layout.compaction_dir(generation)}/{name}")
