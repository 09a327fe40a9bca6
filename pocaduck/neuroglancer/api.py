"""``export_neuroglancer``: a store as sharded precomputed point annotations that neuroglancer opens."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from ..arguments import non_negative_int, optional_positive_int, positive_int
from ..config import StorageConfig, as_config
from ..errors import ExportCancelledError, ExportError, LegacyStoreError
from ..executor import Pool, Task, raise_first_failure, run_tasks
from ..progress import Progress, check_progress, progress_sink
from ..query import Query
from ..storage import Storage, open_storage
from ..store import Store, open_store
from .plan import (
    DEFAULT_SHARD_BYTES,
    FORMAT,
    FORMAT_VERSION,
    INFO,
    RECORD,
    WORK,
    ExportPlan,
    make_plan,
    output_state,
    refuse_store_folder,
    save_plan,
)
from .spatial import POINTS_PER_CELL
from .tasks import ExportTask, is_done, publish, result_of, run_export_task
from .update import UpdateTask, plan_update, run_update_task, updated_totals

_POOL: Pool = "threads"  # local tasks run in threads: measured, see export_neuroglancer's docstring


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote; ``reused`` when ``out`` already held this very export and nothing was written."""

    out: str
    labels: int
    points: int
    files: int
    bytes: int
    tasks: int
    tasks_reused: int
    seconds: float
    reused: bool = False

    @property
    def points_per_second(self) -> float:
        return self.points / self.seconds if self.seconds > 0 and not self.reused else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "points_per_second": round(self.points_per_second)}


def export_neuroglancer(
    store: Store | StorageConfig | str | os.PathLike,
    out: StorageConfig | str | os.PathLike,
    labels: Iterable[int] | None = None,
    properties: Sequence[str] | None = None,
    workers: int | None = None,
    client: Any = None,
    progress: Progress = "auto",
    *,
    mapping: str | None = None,
    retries: int = 0,
    stop: threading.Event | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    points_per_cell: int = POINTS_PER_CELL,
) -> ExportReport:
    """Write ``labels`` of a store (all by default) into ``out`` as neuroglancer precomputed point annotations.

    ``out`` is a new or empty folder, or a bucket URL (``s3://…``, ``gs://…``, ``az://…``). It
    gets ``info``, a ``by_id`` index, one relationship ``label`` (select a segment, see its
    points) and a spatial index of several levels, all sharded (``neuroglancer_uint64_sharded_v1``,
    shards of about ``shard_bytes``). Each spatial level holds about ``points_per_cell`` points per grid
    cell, the finest level the rest. Open it in neuroglancer as ``precomputed://URL-of-out``.

    Coordinates are the store's x, y, z as float32, in voxels of the manifest's ``voxel_size``
    (nm; 1 nm with a warning when it has none). ``properties`` (default: every column after x, y, z)
    become annotation properties; neuroglancer has no 64-bit types, so int64 and uint64 columns
    become int32 and uint32 (a value out of range stops the export, naming the column) and
    float64 columns float32.

    With ``mapping=`` (a version written by :func:`pocaduck.write_mapping`) the segments are that
    version's bodies: ``labels`` are body ids, a body's points are its supervoxels' points, and each
    point gets a ``supervoxel`` property (uint32, the first property) unless a supervoxel id is 2**32 or
    more, which neuroglancer's properties cannot hold (it is then left out), or the store has a column of
    that name. ``pocaduck_export.json`` records the version. Exporting another version of the same
    history (say a child with merges and cleaves) into a finished export of all bodies updates it:
    only the ``by_id`` shards holding points whose body changed and the ``label`` shards holding a
    changed body (from :func:`pocaduck.changed_bodies`: removed ids vanish, new ones appear) are
    rewritten, every other file keeps its bytes, and the folder ends byte for byte a fresh export of
    the new version. A version of another history, another store or other settings is refused
    (``ExportFolderError``): export into a new folder.

    Tasks run on :func:`pocaduck.executor.run_tasks`: in ``workers`` threads of this process
    (default one per CPU; 1 runs them one after another), or on a Dask ``client``; a task that
    fails runs again up to ``retries`` times. Threads, not processes: a task's work is DuckDB,
    Arrow, Parquet and numpy, which release the GIL, and side by side on a 224³ demo volume
    (1.5 M points, 10 tasks, 2 busy cores) 2 threads took 1.2–3.3 s (median 2.2) against 2.0–3.8 s
    (median 2.9) for 2 processes, which also pay their start-up and need an
    ``if __name__ == "__main__":`` guard in scripts. ``progress`` (a callable; ``"tqdm"`` for bars; by
    default bars in a notebook and nothing elsewhere; ``False`` for none) receives a
    :class:`~pocaduck.ProgressEvent` per task as it is queued, runs and ends. Setting
    ``stop`` (from another thread), or Ctrl-C, stops the export between the tasks' units with
    :class:`~pocaduck.ExportCancelledError` (or KeyboardInterrupt). A run that was stopped, failed
    or killed resumes where it stopped when run again with the same arguments, and ends
    with the same bytes as an uninterrupted one; running it again once done changes nothing.
    A folder that holds anything else, or lies inside the store, is refused untouched
    (``ExportFolderError``), and so are labels with coordinates float32 cannot hold (``ExportRangeError``).

    >>> import tempfile, numpy as np
    >>> from pocaduck import Ingestor, consolidate, create_store
    >>> store = tempfile.mkdtemp()
    >>> _ = create_store(store, voxel_size=[8, 8, 40])
    >>> with Ingestor(store, worker_id=0) as ingestor:
    ...     ingestor.write(7, "b0", np.array([[1, 2, 3], [4, 5, 6]]))
    >>> _ = consolidate(store)
    >>> report = export_neuroglancer(store, tempfile.mkdtemp() + "/ng", workers=1)
    >>> report.points, report.labels
    (2, 1)
    """
    workers = optional_positive_int(workers, "workers", "tasks run at once; None for one per CPU")
    retries = non_negative_int(retries, "retries")
    shard_bytes = positive_int(shard_bytes, "shard_bytes")
    progress = check_progress(progress)
    points_per_cell = positive_int(points_per_cell, "points_per_cell")
    started = time.perf_counter()
    opened = open_store(store)
    opened.require("export_neuroglancer")
    if opened.kind != "pocaduck":
        raise LegacyStoreError(
            f"{opened.path} was written by the original pocaduck 0.1.x: convert it first with "
            f"`pocaduck migrate OLD NEW`, then export the new store"
        )
    out_config = as_config(out)
    refuse_store_folder(opened.config, out_config)
    storage = open_storage(out_config)
    mapped = Query(opened, mapping=mapping) if mapping is not None else contextlib.nullcontext()
    with Query(opened) as query, mapped as mapped_query:
        plan, table = make_plan(opened, query, labels, properties, shard_bytes, points_per_cell, mapped_query)
        root = None if mapped_query is None else mapped_query.mapping.root
    state = output_state(storage, plan)
    if state == "done":
        storage.delete_tree(WORK)  # a run killed after its last file leaves only this
        record = json.loads(storage.read_bytes(RECORD))
        return ExportReport(out_config.base_path, record["labels"], record["points"], record["files"],
                            record["bytes"], 0, 0, time.perf_counter() - started, reused=True)  # fmt: skip
    run = {"workers": workers, "stop": stop, "retries": retries, "client": client, "pool": _POOL}
    if state == "update":
        return _update(opened, out_config, storage, plan, table, root, progress, run, started)
    if state == "new":
        save_plan(storage, plan, table)
    phases = [plan.id_tasks(), plan.shard_tasks()]  # every shard task reads every ids task's rows
    pending = 0
    with progress_sink(progress, unit="task") as sink:
        for names in phases:
            todo = [name for name in names if not is_done(storage, name)]
            pending += len(todo)
            tasks = [Task(name, 1, run_export_task, ExportTask(opened.config, out_config, plan.fingerprint, name))
                     for name in todo]  # fmt: skip
            _raise_failures(out_config, run_tasks(tasks, sink=sink, **run))
    names = [name for phase in phases for name in phase]
    results = [result_of(storage, name) for name in names]
    largest = {}
    for name, result in zip(names, results, strict=True):
        index = name.rsplit("-", 1)[0]
        largest[index] = max(largest.get(index, 0), result["largest_cell"])
    info = plan.info([largest.get(f"spatial{level}", 0) for level in range(len(plan.levels))])
    # allow_nan=False: neuroglancer parses strict JSON, where NaN and Infinity do not exist
    info_bytes = publish(storage, INFO, [json.dumps(info, indent=1, allow_nan=False).encode()])
    files = sum(result["files"] for result in results) + 1
    total = sum(result["bytes"] for result in results) + info_bytes
    _finish(storage, opened, plan, files, total)
    return ExportReport(out_config.base_path, plan.label_count, plan.point_count, files, total, len(names),
                        len(names) - pending, time.perf_counter() - started)  # fmt: skip


def _update(
    opened: Store,
    out: StorageConfig,
    storage: Storage,
    plan: ExportPlan,
    table: pa.Table,
    root: str,
    progress: Progress,
    run: dict[str, Any],
    started: float,
) -> ExportReport:
    """Move the export in ``out`` to ``plan``'s mapping version, rewriting only the shards its changes touch."""
    update = plan_update(opened, storage, plan, table, root)  # refuses another history before writing
    save_plan(storage, plan, table)
    todo = [name for name in update.tasks if not is_done(storage, name)]
    tasks = [
        Task(name, 1, run_update_task,
             UpdateTask(opened.config, out, plan.fingerprint, name, update.stale_supervoxels, update.changed))
        for name in todo
    ]  # fmt: skip
    with progress_sink(progress, unit="task") as sink:
        _raise_failures(out, run_tasks(tasks, sink=sink, **run))
    files, total = updated_totals(storage, json.loads(storage.read_bytes(RECORD)), update.sizes_before)
    _finish(storage, opened, plan, files, total)
    return ExportReport(out.base_path, plan.label_count, plan.point_count, files, total, len(update.tasks),
                        len(update.tasks) - len(todo), time.perf_counter() - started)  # fmt: skip


def _finish(storage: Storage, opened: Store, plan: ExportPlan, files: int, total: int) -> None:
    """Record what the folder holds now (a re-run finds it done), then remove the work folder."""
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, "fingerprint": plan.fingerprint,
              "frame": plan.frame, "mapping": plan.mapping, "store": opened.path, "labels": plan.label_count,
              "points": plan.point_count, "files": files, "bytes": total}  # fmt: skip
    publish(storage, RECORD, [json.dumps(record, indent=1).encode()])
    storage.delete_tree(WORK)


def _raise_failures(out: StorageConfig, results: dict[str, Any]) -> None:
    """Stop with an error saying what went wrong and what helps: running again resumes from the tasks done."""
    resumes = f"run the export into {out.base_path} again with the same arguments: it resumes from the tasks done"
    raise_first_failure(
        results,
        lambda first: f"export task {first.worker_id} failed: {first.text}",
        resumes,
        ExportError,
        ExportCancelledError(f"the export was cancelled; {resumes}"),
    )
