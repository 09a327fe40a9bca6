"""The export's tasks: each a small picklable object that writes its files and returns what it wrote.

``ids-<i>`` tasks read the store (one ``by_id`` shard's id range each), write
that ``by_id`` shard, and leave their points for the shard tasks, grouped by
the shard task that will read them. ``label-<s>`` and ``spatial<l>-<s>``
tasks, once every ``ids`` task is done, gather their rows from all of them and
write one shard. :func:`run_export_task` runs one as a task of
:func:`pocaduck.executor.run_tasks` (in this process, local threads or
processes, or on Dask): a task needs only its own fields and the files in the
output folder, and a task run again (a retry) replaces what it wrote.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import StorageConfig
from ..errors import ExportError
from ..executor import ShouldStop, TaskOutcome, TaskStopped
from ..progress import Callback, ProgressEvent
from ..query import Query
from ..storage import Storage, open_storage
from .annotations import RELATIONSHIP, by_id_size, encode_by_id, encode_groups, encode_records
from .plan import WORK, ExportPlan, done_path, load_plan, rows_path, shard_path
from .sharded import encode_shard
from .spatial import cell_keys, level_of, point_hash

_ROWS_SCHEMA_KEY = b"targets"  # in a rows file: shard task -> (first row group, row group count)


@dataclass(frozen=True)
class ExportTask:
    """One task of an export: ``name`` is ``ids-<i>``, ``label-<s>`` or ``spatial<l>-<s>``."""

    store: StorageConfig
    out: StorageConfig
    fingerprint: str
    name: str

    def __call__(self, checkpoint: Callable[[], None] = lambda: None) -> dict[str, Any]:
        """Write the task's files and marker; ``checkpoint()`` between units raises to stop it."""
        started = time.perf_counter()
        plan, labels = load_plan(self.out, self.fingerprint)
        storage = open_storage(self.out)
        write = _write_ids if self.name.startswith("ids-") else _write_shard
        result = write(self, plan, labels, storage, checkpoint)
        publish(storage, done_path(self.name), [json.dumps(result).encode()])
        return {**result, "seconds": time.perf_counter() - started}


def run_export_task(task: ExportTask, report: Callback, should_stop: ShouldStop) -> TaskOutcome:
    """One export task on the executor: it reports that it runs, writes its files and marker, and ends with its counts.

    ``should_stop`` is checked before it starts and between its units (reading
    the store and writing a ``by_id`` shard; each ids task's rows a shard
    gathers); a stopped task leaves no marker, so the next run redoes it.
    """
    check_stop(should_stop, task.name)
    report(ProgressEvent(task.name, "running", blocks_total=1))
    result = task(lambda: check_stop(should_stop, task.name))
    final_event = ProgressEvent(
        task.name,
        "finished",
        blocks_done=1,
        blocks_total=1,
        labels_written=result["labels"],
        points_written=result["points"],
        files_written=result["files"],
        bytes_written=result["bytes"],
        elapsed=result["seconds"],
    )
    return TaskOutcome(final_event, result)


def check_stop(should_stop: ShouldStop, name: str) -> None:
    if should_stop():
        raise TaskStopped(f"export task {name} stopped: the export was cancelled")


def is_done(storage: Storage, task: str) -> bool:
    return storage.exists(done_path(task))


def result_of(storage: Storage, task: str) -> dict[str, Any]:
    """A finished task's result, from its marker."""
    return json.loads(storage.read_bytes(done_path(task)))


def publish(storage: Storage, path: str, pieces: Iterable[bytes]) -> int:
    """Write ``path`` from ``pieces`` atomically; return its size.

    The file is built in the work folder, never beside its destination, so a
    kill leaves nothing in the output but whole files (the work folder goes at the end).
    """
    staging = storage.staging_dir(f"{WORK}/staging")
    local = os.path.join(staging, uuid.uuid4().hex)
    with open(local, "wb") as file:
        for piece in pieces:
            file.write(piece)
    size = os.path.getsize(local)
    storage.publish(local, path)
    return size


def _write_ids(
    task: ExportTask, plan: ExportPlan, labels: pa.Table, storage: Storage, checkpoint: Callable[[], None]
) -> dict[str, Any]:
    number = int(task.name.removeprefix("ids-"))
    low = number * plan.ids_per_task
    high = min(plan.point_count, low + plan.ids_per_task)
    counts = labels["point_count"].to_numpy()
    first_ids = labels["first_id"].to_numpy().astype(np.int64)
    first = int(np.searchsorted(first_ids + counts, low, side="right"))
    last = int(np.searchsorted(first_ids, high, side="left"))
    point_labels, geometry, records = read_records(task.store, plan, labels, np.arange(first, last))
    segments = (
        point_labels
        if "body" not in labels.column_names
        else np.repeat(labels["body"].to_numpy()[first:last], counts[first:last])
    )
    ids = first_ids[first] + np.arange(len(point_labels), dtype=np.int64)
    mine = slice(low - first_ids[first], high - first_ids[first])

    by_id = np.arange(low, high, dtype=np.uint64)
    values = encode_by_id(records[mine], segments[mine])
    sizes = np.full(len(by_id), by_id_size(plan.record), np.uint64)
    checkpoint()
    written = publish(storage, shard_path(plan, "by_id", number), encode_shard(plan.by_id, by_id, sizes, values))
    checkpoint()

    # Each point goes to its segment in the label index (a segment's points may lie in several tasks: the
    # shard task joins them) and to one spatial cell.
    targets = [plan.relationship.shard_of(segments[mine])]
    keys = [segments[mine]]
    row_ids = [ids[mine]]
    rows = [records[mine]]
    hashes = point_hash(ids[mine].astype(np.uint64))
    levels = level_of(hashes, plan.levels)
    offset = plan.relationship.shards
    lower = np.array(plan.lower)
    for number_of_level, (level, sharding) in enumerate(zip(plan.levels, plan.level_shardings, strict=True)):
        chosen = np.flatnonzero(levels == number_of_level) + mine.start
        cells = cell_keys(geometry[chosen], lower, level)
        targets.append(offset + sharding.shard_of(cells))
        keys.append(cells)
        row_ids.append(ids[chosen])
        rows.append(records[chosen])
        offset += sharding.shards
    _write_rows(storage, task.name, plan.shard_tasks(), targets, keys, row_ids, rows, plan.record.itemsize)
    return {"points": int(high - low), "labels": int(last - first), "files": 1, "bytes": written, "largest_cell": 0}


def read_records(
    store: StorageConfig, plan: ExportPlan, labels: pa.Table, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The points of the plan's labels at positions ``rows`` (increasing), in annotation id order: each one's
    label, its float32 geometry (n, 3) and its record."""
    label_ids = labels["label"].to_numpy()[rows]
    counts = labels["point_count"].to_numpy()[rows]
    with Query(store) as query:
        table = query.get_points(label_ids.tolist(), output="arrow")
    point_labels = table["label"].to_numpy()
    if not np.array_equal(point_labels, np.repeat(label_ids, counts)):
        raise ExportError(
            f"the store changed while it was exported (labels {label_ids[0]}..{label_ids[-1]} no longer "
            f"have the points planned): export it again into a new folder once nothing writes to it"
        )
    geometry = np.column_stack([table.column(i).to_numpy() for i in range(1, 4)]).astype(np.float32)
    properties = np.column_stack([table[name].to_numpy() for name in plan.properties]) if plan.properties else None
    supervoxels = point_labels if plan.supervoxel_property else None
    records = encode_records(geometry, properties, plan.property_type, plan.properties, supervoxels)
    return point_labels, geometry, records


def _write_rows(
    storage: Storage,
    task: str,
    shard_tasks: list[str],
    targets: list[np.ndarray],
    keys: list[np.ndarray],
    ids: list[np.ndarray],
    records: list[np.ndarray],
    record_size: int,
) -> None:
    """One Parquet file of (key, id, record) rows, a run of row groups per shard task that will read them."""
    target = np.concatenate(targets)
    order = np.argsort(target, kind="stable")
    target = target[order]
    key = np.concatenate(keys).astype(np.uint64)[order]
    point_id = np.concatenate(ids).astype(np.uint64)[order]
    record = np.concatenate(records)[order]
    present, starts = np.unique(target, return_index=True)
    ends = np.append(starts[1:], len(target))
    runs = {shard_tasks[code]: [group, 1] for group, code in enumerate(present.tolist())}
    schema = pa.schema(
        [("key", pa.uint64()), ("id", pa.uint64()), ("record", pa.binary(record_size))],
        metadata={_ROWS_SCHEMA_KEY: json.dumps(runs).encode()},
    )
    staging = storage.staging_dir(f"{WORK}/staging")
    local = os.path.join(staging, uuid.uuid4().hex)
    with pq.ParquetWriter(local, schema) as writer:
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            chunk = pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(record_size), end - start, [None, pa.py_buffer(record[start:end].tobytes())]
            )
            part = pa.table([pa.array(key[start:end]), pa.array(point_id[start:end]), chunk], schema=schema)
            writer.write_table(part, row_group_size=end - start + 1)
    storage.publish(local, rows_path(task))


def _write_shard(
    task: ExportTask, plan: ExportPlan, labels: pa.Table, storage: Storage, checkpoint: Callable[[], None]
) -> dict[str, Any]:
    index, shard = task.name.rsplit("-", 1)
    parts = []
    for source in plan.id_tasks():
        checkpoint()
        rows = pq.ParquetFile(storage.open_input(rows_path(source)))
        runs = json.loads(rows.schema_arrow.metadata[_ROWS_SCHEMA_KEY])
        if task.name in runs:
            first, count = runs[task.name]
            parts.append(rows.read_row_groups(range(first, first + count)))
    if not parts:
        return {"points": 0, "labels": 0, "files": 0, "bytes": 0, "largest_cell": 0}
    table = pa.concat_tables(parts).combine_chunks()
    keys = table["key"].to_numpy()
    ids = table["id"].to_numpy()
    record_size = plan.record.itemsize
    records = table["record"].chunk(0)
    records = np.frombuffer(records.buffers()[1], f"V{record_size}", len(records), records.offset * record_size)
    sharding = plan.sharding_of(index)
    within = ids if index == RELATIONSHIP else point_hash(ids)  # a cell's points in random order
    order = np.lexsort((within, keys, sharding.minishard_of(keys)))
    keys, ids, records = keys[order], ids[order], records[order]
    starts = np.flatnonzero(np.diff(keys, prepend=keys[0] ^ np.uint64(1)))
    counts = np.diff(np.append(starts, len(keys)))
    data, sizes = encode_groups(counts, records, ids)
    written = publish(storage, shard_path(plan, index, int(shard)), encode_shard(sharding, keys[starts], sizes, data))
    return {
        "points": len(keys),
        "labels": len(starts) if index == RELATIONSHIP else 0,
        "files": 1,
        "bytes": written,
        "largest_cell": int(counts.max()),
    }
