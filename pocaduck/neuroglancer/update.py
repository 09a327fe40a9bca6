"""Moving a finished export of one mapping version to another: only the shards the changed bodies touch are rewritten.

Under a mapping, everything an export writes but the segment ids is planned
from the supervoxels alone (``plan.make_plan``): annotation ids, the spatial
index (its records carry no body) and ``info`` are the same for every version.
What differs is each point's body in ``by_id`` and the relationship ``label``
(body -> its points). So an update

- patches the body of the points of supervoxels whose body changed, in the
  ``by_id`` shards that hold them (read back, no store read);
- rebuilds, in each relationship shard holding a changed body (old or new id),
  the chunks of the changed bodies from their supervoxels' points, keeping
  every other chunk's bytes;

and rewrites a file only when its bytes change. Both are functions of the new
version alone, so the result is byte for byte a fresh export of it, and a task
run twice (a retry, a resumed run) writes the same bytes. A run killed half-way
leaves ``update.json`` in the work folder: the next run, to this version or
another, also redoes what the unfinished one may have changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..config import StorageConfig
from ..errors import ExportFolderError
from ..executor import ShouldStop, TaskOutcome
from ..mapping import changed_bodies
from ..progress import Callback, ProgressEvent
from ..query import Query
from ..storage import Storage, open_storage
from ..store import Store
from .annotations import RELATIONSHIP, by_id_dtype, encode_groups
from .plan import RECORD, UPDATE, WORK, ExportPlan, done_path, load_plan, shard_path
from .sharded import decode_shard, encode_shard
from .tasks import check_stop, publish, read_records


@dataclass(frozen=True)
class UpdatePlan:
    """What an update rewrites: the ``by_id`` shards to patch, the relationship shards to rebuild, and the
    sizes the touched files had in the recorded export (to count its files and bytes at the end)."""

    tasks: list[str]
    stale_supervoxels: np.ndarray  # positions in the plan's labels table whose body is out of date somewhere
    changed: np.ndarray  # bodies, sorted: old and new ids
    sizes_before: dict[str, int | None]


def plan_update(store: Store, storage: Storage, plan: ExportPlan, labels: pa.Table, root: str) -> UpdatePlan:
    """The update of the export in ``storage`` to ``plan`` (same frame, another version); unrelated versions are
    refused. ``root`` is the root of the new version's history."""
    record = json.loads(storage.read_bytes(RECORD))
    unfinished = json.loads(storage.read_bytes(UPDATE)) if storage.exists(UPDATE) else None
    exported = record["mapping"]
    with Query(store, mapping=exported) as old:
        if old.mapping.root != root:
            raise ExportFolderError(
                f"{storage.describe('')} holds an export of mapping version {exported}, which shares no history "
                f"with {plan.mapping}: nothing was changed. Export into a new folder, or delete this one first"
            )
    targets = [] if unfinished is None else [t for t in unfinished["targets"] if t != plan.mapping]
    supervoxels = labels["label"].to_numpy()
    bodies = labels["body"].to_numpy()
    stale = np.zeros(len(supervoxels), bool)
    changed = np.empty(0, np.uint64)
    for version in [exported, *targets]:  # the recorded state and whatever an unfinished update wrote
        with Query(store, mapping=version) as query:
            stale |= query.get_body(supervoxels) != bodies
        changed = np.union1d(changed, changed_bodies(store, version, plan.mapping))
    stale_rows = np.flatnonzero(stale)
    first_ids = labels["first_id"].to_numpy().astype(np.int64)
    counts = labels["point_count"].to_numpy().astype(np.int64)
    by_id = set()
    for first, count in zip(first_ids[stale_rows].tolist(), counts[stale_rows].tolist(), strict=True):
        by_id.update(range(first // plan.ids_per_task, (first + count - 1) // plan.ids_per_task + 1))
    relationship = np.unique(plan.relationship.shard_of(changed.astype(np.uint64))).tolist()
    tasks = [f"by_id-{shard:06d}" for shard in sorted(by_id)] + [f"{RELATIONSHIP}-{s:06d}" for s in relationship]
    paths = [_path(plan, task) for task in tasks]
    sizes = {} if unfinished is None else dict(unfinished["sizes_before"])
    sizes.update({path: _size(storage, path) for path in paths if path not in sizes})
    if unfinished is not None and unfinished["targets"][-1] != plan.mapping:
        storage.delete_tree(f"{WORK}/done")  # those tasks wrote another version: every task runs again
    marker = {"fingerprint": plan.fingerprint, "targets": [*targets, plan.mapping], "sizes_before": sizes}
    storage.write_bytes(UPDATE, json.dumps(marker, indent=1).encode())
    return UpdatePlan(tasks, stale_rows, changed, sizes)


def updated_totals(storage: Storage, record: dict[str, Any], sizes_before: dict[str, int | None]) -> tuple[int, int]:
    """The export's files and bytes once updated: the recorded ones, changed by what the touched files became."""
    files, total = record["files"], record["bytes"]
    for path, before in sizes_before.items():
        after = _size(storage, path)
        files += (after is not None) - (before is not None)
        total += (after or 0) - (before or 0)
    return files, total


def _path(plan: ExportPlan, task: str) -> str:
    index, shard = task.rsplit("-", 1)
    return shard_path(plan, index, int(shard))


def _size(storage: Storage, path: str) -> int | None:
    try:
        return storage.size(path)
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class UpdateTask:
    """One task of an update: ``by_id-<s>`` patches bodies, ``label-<s>`` rebuilds changed bodies' chunks."""

    store: StorageConfig
    out: StorageConfig
    fingerprint: str
    name: str
    stale_supervoxels: np.ndarray
    changed: np.ndarray

    def __call__(self, checkpoint: Callable[[], None] = lambda: None) -> dict[str, Any]:
        plan, labels = load_plan(self.out, self.fingerprint)
        storage = open_storage(self.out)
        path = _path(plan, self.name)
        old = storage.read_bytes(path) if storage.exists(path) else None
        rebuild = _patched_by_id if self.name.startswith("by_id-") else _rebuilt_relationship
        pieces = rebuild(self, plan, labels, old, checkpoint)
        checkpoint()
        new = b"".join(pieces) if pieces else None
        if new != old:
            if new is None:
                storage.delete_tree(path)
            else:
                publish(storage, path, [new])
        result = {"rewritten": new != old, "bytes": len(new or b"")}
        publish(storage, done_path(self.name), [json.dumps(result).encode()])  # a resumed update skips it
        return result


def run_update_task(task: UpdateTask, report: Callback, should_stop: ShouldStop) -> TaskOutcome:
    """One update task on :func:`pocaduck.executor.run_tasks`: it reports that it runs, rewrites its shard if its
    bytes change, and ends with what it wrote."""
    check_stop(should_stop, task.name)
    report(ProgressEvent(task.name, "running", blocks_total=1))
    result = task(lambda: check_stop(should_stop, task.name))
    written = int(result["rewritten"])
    final = ProgressEvent(task.name, "finished", blocks_done=1, blocks_total=1, files_written=written,
                          bytes_written=result["bytes"] * written)  # fmt: skip
    return TaskOutcome(final, result)


def _patched_by_id(
    task: UpdateTask, plan: ExportPlan, labels: pa.Table, old: bytes | None, checkpoint: Callable[[], None]
) -> list[bytes]:
    """The ``by_id`` shard with each point of a stale supervoxel naming its body in the new version."""
    number = int(task.name.removeprefix("by_id-"))
    low = number * plan.ids_per_task
    if old is None:
        raise ExportFolderError(f"by_id shard {number} of the export is missing: export into a new folder")
    packed = by_id_dtype(plan.record)
    # Ids are dense and written in key order after the shard index, each value the same size; only the bodies
    # change, so the minishard indexes after the values keep their bytes.
    values_start = (1 << plan.by_id.minishard_bits) * 16
    values = np.frombuffer(old, packed, min(plan.point_count - low, plan.ids_per_task), values_start).copy()
    first_ids = labels["first_id"].to_numpy().astype(np.int64)[task.stale_supervoxels]
    counts = labels["point_count"].to_numpy().astype(np.int64)[task.stale_supervoxels]
    bodies = labels["body"].to_numpy()[task.stale_supervoxels]
    here = (first_ids + counts > low) & (first_ids < low + len(values))  # one step per supervoxel of this shard
    first_ids, counts, bodies = first_ids[here], counts[here], bodies[here]
    for first, count, body in zip(first_ids.tolist(), counts.tolist(), bodies.tolist(), strict=True):
        start, stop = max(first - low, 0), min(first + count - low, len(values))
        if start < stop:
            values["label"][start:stop] = body
    return [old[:values_start], values.tobytes(), old[values_start + values.nbytes :]]


def _rebuilt_relationship(
    task: UpdateTask, plan: ExportPlan, labels: pa.Table, old: bytes | None, checkpoint: Callable[[], None]
) -> list[bytes]:
    """The relationship shard with the changed bodies' chunks rebuilt from their points, the others kept."""
    shard = int(task.name.rsplit("-", 1)[1])
    sharding = plan.relationship
    keys, starts, sizes = decode_shard(sharding, old) if old is not None else (np.empty(0, np.uint64),) * 3
    kept = np.flatnonzero(~np.isin(keys, task.changed))
    view = memoryview(old or b"")
    keys = keys[kept]
    chunks = [
        view[start : start + size] for start, size in zip(starts[kept].tolist(), sizes[kept].tolist(), strict=True)
    ]
    bodies = labels["body"].to_numpy()
    mine = task.changed[sharding.shard_of(task.changed) == shard]
    rows = np.flatnonzero(np.isin(bodies, mine))
    if len(rows):
        checkpoint()
        _, _, records = read_records(task.store, plan, labels, rows)
        counts = labels["point_count"].to_numpy().astype(np.int64)[rows]
        first_ids = labels["first_id"].to_numpy().astype(np.int64)[rows]
        ids = np.repeat(first_ids, counts) + _ranks(counts)
        point_bodies = np.repeat(bodies[rows], counts)
        order = np.lexsort((ids, point_bodies))
        point_bodies, ids, records = point_bodies[order], ids[order], records[order]
        starts = np.flatnonzero(np.diff(point_bodies, prepend=point_bodies[0] ^ np.uint64(1)))
        data, sizes = encode_groups(np.diff(np.append(starts, len(ids))), records, ids.astype(np.uint64))
        ends = np.cumsum(sizes.astype(np.int64))
        built = memoryview(data)
        keys = np.concatenate([keys, point_bodies[starts]])
        chunks += [built[end - size : end] for end, size in zip(ends.tolist(), sizes.tolist(), strict=True)]
    if not len(keys):
        return []
    order = sharding.chunk_order(keys)
    sizes = np.array([len(chunks[i]) for i in order.tolist()], np.uint64)
    return encode_shard(sharding, keys[order], sizes, b"".join([chunks[i] for i in order.tolist()]))


def _ranks(counts: np.ndarray) -> np.ndarray:
    """``0 .. count-1`` for each of ``counts``, concatenated.

    >>> _ranks(np.array([2, 3])).tolist()
    [0, 1, 0, 1, 2]
    """
    starts = np.cumsum(counts) - counts
    return np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(starts, counts)
